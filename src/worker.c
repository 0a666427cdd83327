/*
 * A background thread for work too slow for the event loop (a bcrypt
 * check, an fdatasync of a large blob).  The owner queues jobs; the thread
 * runs them one at a time and puts them on a done list, waking the loop
 * through a pipe; the owner's completion then runs on the loop, where the
 * rest of the program lives.  Completions usually look their requester up
 * by an id, since it may have gone meanwhile.
 *
 * Each owner has one static struct worker, initialised with WORKER_INIT
 * and its own callbacks, and puts a struct worker_job first in its job
 * structure, so that the callbacks can convert the pointer back.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include "regcache.h"

static void *
worker_main(void *arg)
{
	struct worker		*w = arg;
	struct worker_job	*j;
	char			 c = 1;

	pthread_mutex_lock(&w->w_lock);
	for (;;) {
		while (TAILQ_EMPTY(&w->w_queue) && !w->w_stop)
			pthread_cond_wait(&w->w_cond, &w->w_lock);
		/* A draining worker stops only once its queue is empty. */
		if (w->w_stop && (!w->w_drain || TAILQ_EMPTY(&w->w_queue)))
			break;
		j = TAILQ_FIRST(&w->w_queue);
		TAILQ_REMOVE(&w->w_queue, j, wj_entry);
		pthread_mutex_unlock(&w->w_lock);
		w->w_run(j);
		pthread_mutex_lock(&w->w_lock);
		TAILQ_INSERT_TAIL(&w->w_done, j, wj_entry);
		if (write(w->w_pipe[1], &c, 1) == -1 && errno != EAGAIN)
			break;
	}
	pthread_mutex_unlock(&w->w_lock);
	return NULL;
}

/* On the loop: hand each finished job to the owner's completion. */
static void
worker_complete(evutil_socket_t fd, short what, void *arg)
{
	struct worker		*w = arg;
	struct worker_job	*j;
	char			 buf[64];

	while (read(w->w_pipe[0], buf, sizeof(buf)) > 0)
		;
	for (;;) {
		pthread_mutex_lock(&w->w_lock);
		if ((j = TAILQ_FIRST(&w->w_done)) != NULL)
			TAILQ_REMOVE(&w->w_done, j, wj_entry);
		pthread_mutex_unlock(&w->w_lock);
		if (j == NULL)
			break;
		w->w_complete(j);
	}
}

/*
 * Start w's thread unless it runs.  0 when it runs; -1 without an event
 * loop, or when it could not be started (logged once: later calls fail
 * at once rather than retry each time).
 */
int
worker_start(struct worker *w)
{
	if (w->w_running)
		return 0;
	if (w->w_failed || ev_base == NULL)
		return -1;
	if (pipe2(w->w_pipe, O_CLOEXEC | O_NONBLOCK) == -1)
		goto fail;
	if ((w->w_ev = event_new(ev_base, w->w_pipe[0], EV_READ | EV_PERSIST,
	    worker_complete, w)) == NULL || event_add(w->w_ev, NULL) == -1)
		goto fail;
	w->w_stop = 0;
	if (pthread_create(&w->w_thread, NULL, worker_main, w) != 0)
		goto fail;
	w->w_running = 1;
	return 0;
 fail:
	log_warn("%s: no %s worker", w->w_subsystem, w->w_name);
	w->w_failed = 1;
	if (w->w_ev != NULL)
		event_free(w->w_ev);
	w->w_ev = NULL;
	if (w->w_pipe[0] != -1) {
		close(w->w_pipe[0]);
		close(w->w_pipe[1]);
	}
	w->w_pipe[0] = w->w_pipe[1] = -1;
	return -1;
}

/* Queue j for a running worker. */
void
worker_queue(struct worker *w, struct worker_job *j)
{
	pthread_mutex_lock(&w->w_lock);
	TAILQ_INSERT_TAIL(&w->w_queue, j, wj_entry);
	pthread_cond_signal(&w->w_cond);
	pthread_mutex_unlock(&w->w_lock);
}

/*
 * Stop the thread and wait for it.  A draining worker first runs every
 * queued job, and their completions run here; any other hands the jobs
 * it did not finish to w_discard (when set), without completion.  The
 * worker can be started again afterwards.
 */
void
worker_stop(struct worker *w)
{
	struct worker_job	*j;

	if (w->w_running) {
		pthread_mutex_lock(&w->w_lock);
		w->w_stop = 1;
		pthread_cond_signal(&w->w_cond);
		pthread_mutex_unlock(&w->w_lock);
		pthread_join(w->w_thread, NULL);
		w->w_running = 0;
		if (w->w_drain)
			worker_complete(-1, 0, w);
		event_free(w->w_ev);
		w->w_ev = NULL;
		close(w->w_pipe[0]);
		close(w->w_pipe[1]);
		w->w_pipe[0] = w->w_pipe[1] = -1;
	}
	if (w->w_discard == NULL)
		return;
	while ((j = TAILQ_FIRST(&w->w_queue)) != NULL) {
		TAILQ_REMOVE(&w->w_queue, j, wj_entry);
		w->w_discard(j);
	}
	while ((j = TAILQ_FIRST(&w->w_done)) != NULL) {
		TAILQ_REMOVE(&w->w_done, j, wj_entry);
		w->w_discard(j);
	}
}

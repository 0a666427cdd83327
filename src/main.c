/*
 * regcache: one binary, several subcommands.  `serve` runs the daemon;
 * the others inspect its configuration and maintain its cache.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <jansson.h>
#include <lmdb.h>
#include <openssl/opensslv.h>

#include "regcache.h"

struct event_base	*ev_base;
struct evdns_base	*dns_base;
struct config		*conf;

static void
usage_main(FILE *f)
{
	fprintf(f,
"usage: regcache <command> [options]\n"
"\n"
"commands:\n"
"  serve [-c FILE] [-l ADDR:PORT] [-d DIR] [-u URL] [-v]\n"
"        [--admin ADDR:PORT|none]\n"
"                           run the pull-through cache\n"
"  check-config -c FILE     validate a configuration file\n"
"  verify [-c FILE] [-d DIR] [-n]\n"
"                           re-hash the cache, remove what is damaged\n"
"  gc [-c FILE] [-d DIR] [--dry-run]\n"
"                           evict to the budget, remove leftovers\n"
"  ls [-c FILE] [-d DIR] [--json]\n"
"                           list cached repositories, tags and blobs\n"
"  stats [--json] [URL]     summary of a running instance (admin URL)\n"
"  warm [--url URL] [--platform OS/ARCH[/VARIANT]]... IMAGE...\n"
"                           pull images into a running regcache's cache\n"
"  version                  print the version\n"
"\n"
"Run 'regcache <command> -h' for the options of a command.\n");
}

static void
usage_serve(FILE *f)
{
	fprintf(f,
"usage: regcache serve [-c FILE] [-l ADDR:PORT] [-d DIR] [-u URL] [-v]\n"
"                      [--admin ADDR:PORT|none]\n"
"\n"
"  -c FILE        configuration file (JSON); env REGCACHE_CONFIG.\n"
"                 Without one: a Docker Hub mirror on " DEFAULT_LISTEN ",\n"
"                 data in " DEFAULT_DATA_DIR ".\n"
"  -l ADDR:PORT   listen on this address only (plain HTTP);\n"
"                 env REGCACHE_LISTEN\n"
"  -d DIR         data directory; env REGCACHE_DATA_DIR\n"
"  -u URL         a single upstream registry, replacing the configured\n"
"                 ones; env REGCACHE_UPSTREAM\n"
"  -v             debug logging (env REGCACHE_LOG_LEVEL=error|warn|info|debug)\n"
"  --admin ADDR:PORT\n"
"                 the admin listener (/stats, /metrics, /healthz, /readyz);\n"
"                 none: no admin listener; env REGCACHE_ADMIN.\n"
"                 Default " DEFAULT_ADMIN_LISTEN ".\n"
"  -h             this help\n");
}

static void
usage_check(FILE *f)
{
	fprintf(f,
"usage: regcache check-config -c FILE\n"
"\n"
"  Parse and validate FILE; print 'configuration OK' or the error\n"
"  (file:line:column: key: message) and exit 1.\n");
}

#define USAGE_TOOL_OPTIONS \
"  -c FILE        configuration file (JSON); env REGCACHE_CONFIG\n" \
"  -d DIR         data directory; env REGCACHE_DATA_DIR\n"

static void
usage_verify(FILE *f)
{
	fprintf(f,
"usage: regcache verify [-c FILE] [-d DIR] [-n]\n"
"\n"
"  Re-hash every cached blob.  Remove the entries whose bytes or size are\n"
"  wrong or whose file is gone; while no daemon runs, also files under\n"
"  blobs/ the index does not know and leftovers in tmp/.  Safe to run\n"
"  beside the daemon.  Exit 0: all good; 1: something was found (and\n"
"  removed); 2: error.\n"
"\n"
USAGE_TOOL_OPTIONS
"  -n             report only, remove nothing\n"
"  -h             this help\n");
}

static void
usage_gc(FILE *f)
{
	fprintf(f,
"usage: regcache gc [-c FILE] [-d DIR] [--dry-run]\n"
"\n"
"  Evict least recently served blobs down to cache.low_water percent of\n"
"  cache.max_bytes, and those idle longer than cache.max_idle; while no\n"
"  daemon runs, also remove files under blobs/ the index does not know\n"
"  and leftovers in tmp/.  Exit 0, or 2 on errors.\n"
"\n"
USAGE_TOOL_OPTIONS
"  --dry-run      report what would go, remove nothing\n"
"  -h             this help\n");
}

static void
usage_ls(FILE *f)
{
	fprintf(f,
"usage: regcache ls [-c FILE] [-d DIR] [--json]\n"
"\n"
"  List cached repositories with their tags, and blobs with the\n"
"  repositories they were seen in.  Read-only.  Exit 0, or 2 on errors.\n"
"\n"
USAGE_TOOL_OPTIONS
"  --json         one JSON document instead of tables\n"
"  -h             this help\n");
}

/* SIGUSR1: logrotate moved the access log away; write to a new one. */
static void
sig_usr1_cb(evutil_socket_t sig, short what, void *arg)
{
	log_access_reopen();
}

/* Load the configuration named by -c or the environment, or the default,
 * then apply command-line and environment overrides and validate. */
static struct config *
load_config_err(const char *file, const struct config_overrides *ov,
    char *err, size_t errlen)
{
	struct config	*c;

	if (file != NULL)
		c = config_load(file, err, errlen);
	else
		c = config_default();
	if (c == NULL)
		return NULL;
	if (config_apply_overrides(c, ov, err, errlen) == -1 ||
	    config_validate(c, err, errlen) == -1) {
		config_free(c);
		return NULL;
	}
	return c;
}

static struct config *
load_config(const char *file, const struct config_overrides *ov)
{
	struct config	*c;
	char		 err[1024];

	if ((c = load_config_err(file, ov, err, sizeof(err))) == NULL)
		fprintf(stderr, "regcache: %s\n", err);
	return c;
}

/*
 * The running daemon: what a reload reads again, and the drain.
 */
static const char		*serve_file;
static struct config_overrides	 serve_ov;
static struct event		*drain_timer;
static uint64_t			 drain_deadline;
static int			 shutting_down;

/*
 * SIGHUP: read the configuration again and switch to it, or keep the
 * running one whole.  Everything that can fail is done before anything
 * changes; requests under way finish with what they started with.
 */
static void
serve_reload(void)
{
	struct config	 *c, *old;
	struct upstream	**set;
	SSL_CTX		**ctxs;
	char		  err[1024];

	log_info("reloading the configuration from %s", serve_file != NULL ?
	    serve_file : "the built-in default");
	if ((c = load_config_err(serve_file, &serve_ov, err,
	    sizeof(err))) == NULL) {
		log_warnx("reload refused: %s; the running configuration "
		    "stays", err);
		return;
	}
	if (strcmp(c->data_dir, conf->data_dir) != 0 ||
	    (c->admin == NULL) != (conf->admin == NULL) ||
	    (c->admin != NULL && strcmp(c->admin->address,
	    conf->admin->address) != 0)) {
		log_warnx("reload refused: %s changed: that needs a restart; "
		    "the running configuration stays",
		    strcmp(c->data_dir, conf->data_dir) != 0 ? "data_dir" :
		    "admin.listen");
		config_free(c);
		return;
	}
	if (server_reload_prepare(c, &ctxs, err, sizeof(err)) == -1) {
		log_warnx("reload refused: %s; the running configuration "
		    "stays", err);
		config_free(c);
		return;
	}
	if ((set = upstream_build(c, err, sizeof(err))) == NULL ||
	    server_auth_init(c) == -1) {
		if (set != NULL)
			upstream_install_abort(set, c->nupstreams);
		log_warnx("reload refused: %s; the running configuration "
		    "stays", set == NULL ? err : "auth: cannot load the token "
		    "key");
		server_reload_abort(ctxs);
		config_free(c);
		return;
	}
	/* Last, for it takes effect when it succeeds: a new file (or
	 * format) is opened before the old one is let go. */
	if (log_access_open(c->access_file, c->access_format, err,
	    sizeof(err)) == -1) {
		log_warnx("reload refused: access log: %s; the running "
		    "configuration stays", err);
		upstream_install_abort(set, c->nupstreams);
		server_reload_abort(ctxs);
		config_free(c);
		return;
	}
	old = conf;
	conf = c;
	upstream_install(set, c->nupstreams);
	server_reload_commit(c, ctxs);
	users_cache_flush();
	stats_upstreams_add(c);
	log_setlevel(c->log_level);
	config_unref(old);
	log_info("configuration reloaded: %zu upstream%s, default %s",
	    c->nupstreams, c->nupstreams == 1 ? "" : "s",
	    c->default_upstream >= 0 ?
	    c->upstreams[c->default_upstream].name : "(none)");
}

/* While draining: done when no client is left, or when time is up. */
static void
drain_tick(evutil_socket_t fd, short what, void *arg)
{
	struct timeval	 tv = { 0, 100 * 1000 };

	server_drain();
	if (server_client_count() == 0) {
		log_info("drained: every request answered");
		event_base_loopexit(ev_base, NULL);
		return;
	}
	if (mono_ms() >= drain_deadline) {
		log_warnx("drain timeout: closing %d connection%s still busy",
		    server_client_count(), server_client_count() == 1 ? "" :
		    "s");
		event_base_loopexit(ev_base, NULL);
		return;
	}
	evtimer_add(drain_timer, &tv);
}

static void
sig_cb(evutil_socket_t sig, short what, void *arg)
{
	if (sig == SIGHUP) {
		if (shutting_down)
			log_info("SIGHUP while shutting down: ignored");
		else
			serve_reload();
		return;
	}
	if (shutting_down) {
		log_warnx("signal %d again: exiting now", (int)sig);
		event_base_loopbreak(ev_base);
		return;
	}
	shutting_down = 1;
	if (conf->drain_timeout_ms == 0) {
		log_info("signal %d: shutting down", (int)sig);
		event_base_loopexit(ev_base, NULL);
		return;
	}
	log_info("signal %d: draining, at most %d s; a second signal exits "
	    "at once", (int)sig, (conf->drain_timeout_ms + 999) / 1000);
	drain_deadline = mono_ms() + (uint64_t)conf->drain_timeout_ms;
	event_active(drain_timer, EV_TIMEOUT, 1);
}

static int
cmd_serve(int argc, char **argv)
{
	struct config_overrides	 ov;
	const char		*file = getenv("REGCACHE_CONFIG");
	struct event		*ev_term, *ev_int, *ev_hup, *ev_usr1;
	enum log_level		 level;
	char			 err[512];
	int			 ch, verbose = 0;
	static const struct option longopts[] = {
		{ "admin", required_argument, NULL, 'A' },
		{ NULL, 0, NULL, 0 }
	};

	memset(&ov, 0, sizeof(ov));
	ov.listen = getenv("REGCACHE_LISTEN");
	ov.data_dir = getenv("REGCACHE_DATA_DIR");
	ov.upstream_url = getenv("REGCACHE_UPSTREAM");
	ov.log_level = getenv("REGCACHE_LOG_LEVEL");
	ov.admin = getenv("REGCACHE_ADMIN");
	while ((ch = getopt_long(argc, argv, "c:d:hl:u:v", longopts,
	    NULL)) != -1) {
		switch (ch) {
		case 'A':
			ov.admin = optarg;
			break;
		case 'c':
			file = optarg;
			break;
		case 'd':
			ov.data_dir = optarg;
			break;
		case 'l':
			ov.listen = optarg;
			break;
		case 'u':
			ov.upstream_url = optarg;
			break;
		case 'v':
			verbose = 1;
			break;
		case 'h':
			usage_serve(stdout);
			return 0;
		default:
			usage_serve(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage_serve(stderr);
		return 2;
	}
	if (verbose)
		ov.log_level = "debug";
	if ((conf = load_config(file, &ov)) == NULL)
		return 1;
	serve_file = file;
	serve_ov = ov;
	level = conf->log_level;
	log_init(level, 1);
	if (log_access_open(conf->access_file, conf->access_format, err,
	    sizeof(err)) == -1) {
		log_warnx("%s", err);
		return 1;
	}

	signal(SIGPIPE, SIG_IGN);
	if ((ev_base = event_base_new()) == NULL)
		fatalx("event_base_new failed");
	dns_base = evdns_base_new(ev_base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
	if (dns_base == NULL) {
		/* No usable resolv.conf: numeric hosts and /etc/hosts only. */
		log_warnx("no DNS configuration; numeric addresses only");
		if ((dns_base = evdns_base_new(ev_base, 0)) == NULL)
			fatalx("evdns_base_new failed");
	}
	evdns_base_load_hosts(dns_base, NULL);
	if (mkdir_p(conf->data_dir, 0750) == -1)
		fatal("data directory %s", conf->data_dir);
	if (cache_store_open(conf->data_dir, CACHE_STORE_DAEMON, err,
	    sizeof(err)) == -1) {
		log_warnx("cache: %s", err);
		return 1;
	}
	if (upstream_init(conf) == -1 || server_auth_init(conf) == -1)
		return 1;
	stats_init(conf);
	if (server_start(conf) == -1 || admin_start(conf) == -1 ||
	    cache_evict_start() == -1)
		return 1;

	ev_term = evsignal_new(ev_base, SIGTERM, sig_cb, NULL);
	ev_int = evsignal_new(ev_base, SIGINT, sig_cb, NULL);
	ev_hup = evsignal_new(ev_base, SIGHUP, sig_cb, NULL);
	ev_usr1 = evsignal_new(ev_base, SIGUSR1, sig_usr1_cb, NULL);
	if ((drain_timer = evtimer_new(ev_base, drain_tick, NULL)) == NULL)
		fatalx("evtimer_new failed");
	evsignal_add(ev_term, NULL);
	evsignal_add(ev_int, NULL);
	evsignal_add(ev_hup, NULL);
	evsignal_add(ev_usr1, NULL);
	log_info("regcache %s ready: %zu upstream%s, default %s, data in %s, "
	    "%llu blobs cached (%llu bytes)", PACKAGE_VERSION,
	    conf->nupstreams, conf->nupstreams == 1 ? "" : "s",
	    conf->default_upstream >= 0 ?
	    conf->upstreams[conf->default_upstream].name : "(none)",
	    conf->data_dir, (unsigned long long)idx_blob_count(),
	    (unsigned long long)idx_total_bytes());

	event_base_dispatch(ev_base);

	admin_stop();
	server_stop();
	server_auth_shutdown();
	pt_shutdown();
	fill_shutdown();
	cache_evict_stop();
	upstream_shutdown();
	cache_store_close();
	event_free(ev_term);
	event_free(ev_int);
	event_free(ev_hup);
	event_free(ev_usr1);
	event_free(drain_timer);
	evdns_base_free(dns_base, 0);
	event_base_free(ev_base);
	config_unref(conf);
	log_access_close();
	stats_shutdown();
	log_info("exiting");
	return 0;
}

static int
cmd_check_config(int argc, char **argv)
{
	struct config_overrides	 ov;
	const char		*file = NULL;
	struct config		*c;
	int			 ch;

	while ((ch = getopt(argc, argv, "c:h")) != -1) {
		switch (ch) {
		case 'c':
			file = optarg;
			break;
		case 'h':
			usage_check(stdout);
			return 0;
		default:
			usage_check(stderr);
			return 2;
		}
	}
	if (file == NULL || optind != argc) {
		usage_check(stderr);
		return 2;
	}
	memset(&ov, 0, sizeof(ov));
	if ((c = load_config(file, &ov)) == NULL)
		return 1;
	config_free(c);
	printf("configuration OK\n");
	return 0;
}

/* The maintenance commands: -c and -d as for serve, one flag each. */
#define TOOL_FLAG	256	/* getopt_long's value for the long flag */

struct tool_cmd {
	const char	*name;
	int		(*run)(const struct config *, int);
	void		(*usage)(FILE *);
	const char	*optstring;	/* with the short flag, if any */
	const char	*flag;		/* the long flag, or NULL */
};

static const struct tool_cmd tool_cmds[] = {
	{ "verify", cache_tool_verify, usage_verify, "c:d:hn", NULL },
	{ "gc", cache_tool_gc, usage_gc, "c:d:h", "dry-run" },
	{ "ls", cache_tool_ls, usage_ls, "c:d:h", "json" },
	{ NULL, NULL, NULL, NULL, NULL }
};

/* Run a maintenance command; a bad configuration is an error (2). */
static int
cmd_tool(const struct tool_cmd *tc, int argc, char **argv)
{
	struct config_overrides	 ov;
	struct option		 longopts[2];
	const char		*file = getenv("REGCACHE_CONFIG");
	int			 ch, flag = 0, rc;

	memset(&ov, 0, sizeof(ov));
	ov.data_dir = getenv("REGCACHE_DATA_DIR");
	ov.log_level = getenv("REGCACHE_LOG_LEVEL");
	memset(longopts, 0, sizeof(longopts));
	longopts[0].name = tc->flag;
	longopts[0].has_arg = no_argument;
	longopts[0].val = TOOL_FLAG;
	while ((ch = getopt_long(argc, argv, tc->optstring,
	    tc->flag != NULL ? longopts : longopts + 1, NULL)) != -1) {
		switch (ch) {
		case 'c':
			file = optarg;
			break;
		case 'd':
			ov.data_dir = optarg;
			break;
		case 'n':
		case TOOL_FLAG:
			flag = 1;
			break;
		case 'h':
			tc->usage(stdout);
			return 0;
		default:
			tc->usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		tc->usage(stderr);
		return 2;
	}
	if ((conf = load_config(file, &ov)) == NULL)
		return 2;
	/* Reports go to stdout; the log (stderr) only says what failed. */
	log_init(conf->log_level == LOG_LEVEL_DEBUG ? LOG_LEVEL_DEBUG :
	    LOG_LEVEL_WARN, 0);
	rc = tc->run(conf, flag);
	config_free(conf);
	conf = NULL;
	return rc;
}

static int
cmd_version(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "-h") == 0) {
		printf("usage: regcache version\n");
		return 0;
	}
	printf("regcache %s (libevent %s, %s, LMDB %d.%d.%d, jansson %s)\n",
	    PACKAGE_VERSION, event_get_version(), OPENSSL_VERSION_TEXT,
	    MDB_VERSION_MAJOR, MDB_VERSION_MINOR, MDB_VERSION_PATCH,
	    JANSSON_VERSION);
	return 0;
}

int
main(int argc, char **argv)
{
	const struct tool_cmd	*tc;
	const char		*cmd;

	if (argc < 2) {
		usage_main(stderr);
		return 2;
	}
	cmd = argv[1];
	argc--;
	argv++;
	if (strcmp(cmd, "serve") == 0)
		return cmd_serve(argc, argv);
	if (strcmp(cmd, "check-config") == 0)
		return cmd_check_config(argc, argv);
	if (strcmp(cmd, "warm") == 0)
		return warm_main(argc, argv);
	if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0)
		return cmd_version(argc, argv);
	if (strcmp(cmd, "stats") == 0)
		return stats_cli_main(argc, argv);
	for (tc = tool_cmds; tc->name != NULL; tc++)
		if (strcmp(cmd, tc->name) == 0)
			return cmd_tool(tc, argc, argv);
	if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 ||
	    strcmp(cmd, "help") == 0) {
		usage_main(stdout);
		return 0;
	}
	fprintf(stderr, "regcache: unknown command '%s'\n", cmd);
	usage_main(stderr);
	return 2;
}

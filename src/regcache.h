/*
 * regcache: a pull-through cache and proxy for container registries.
 *
 * The one private header of the program.  Types first, then the functions
 * each file exports, grouped under the name of the file that defines them.
 * Everything not listed here is static to its file.
 */
#ifndef REGCACHE_H
#define REGCACHE_H

#include <sys/types.h>
#include <sys/queue.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <event2/event.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#define REGCACHE_NAME		"regcache"

/* Defaults of the embedded configuration (no file at all). */
#define DEFAULT_LISTEN		"127.0.0.1:5000"
#define DEFAULT_ADMIN_LISTEN	"127.0.0.1:5001"
#define DEFAULT_DATA_DIR	"./regcache-data"
#define DEFAULT_UPSTREAM_NAME	"docker.io"
#define DEFAULT_UPSTREAM_URL	"https://registry-1.docker.io"
#define DEFAULT_CONNECT_TIMEOUT_MS	10000
#define DEFAULT_FIRST_BYTE_TIMEOUT_MS	60000
#define DEFAULT_IDLE_TIMEOUT_MS	120000
#define DEFAULT_CLIENT_TIMEOUT_MS	60000
#define DEFAULT_DRAIN_TIMEOUT_MS	30000
#define DEFAULT_MAX_CONNECTIONS	1024
#define DEFAULT_MAX_HEADER_BYTES	16384
#define DEFAULT_MAX_REDIRECTS	5
#define DEFAULT_POOL_IDLE_MS	30000
#define DEFAULT_POOL_MAX_IDLE	8
#define DEFAULT_TAG_TTL_MS	300000
#define DEFAULT_NEGATIVE_TTL_MS	30000
#define DEFAULT_CACHE_HIGH_WATER 95
#define DEFAULT_CACHE_LOW_WATER	85
#define DEFAULT_TOKEN_TTL_S	300	/* tokens regcache issues to clients */

/* Spec limits. */
#define V2_NAME_MAX		255
#define V2_TAG_MAX		128
#define V2_DIGEST_MAX		(7 + 1 + 128)	/* "sha512:" + 128 hex */

/* Body bytes buffered towards one client before the upstream is paused. */
#define STREAM_HIGH_WATER	(256 * 1024)

/* Magic numbers: a use after free trips an assertion instead of a crash
 * somewhere else (varnish miniobj.h). */
#define CLIENT_MAGIC		0x636c6e74u
#define EXCHANGE_MAGIC		0x65786368u
#define UPREQ_MAGIC		0x75707271u
#define UPCONN_MAGIC		0x7570636eu
#define TOKREQ_MAGIC		0x746f6b72u
#define CHECK_MAGIC(p, m)	do {					\
	if ((p) == NULL || (p)->magic != (m))				\
		fatalx("%s: bad magic on %s", __func__, #p);		\
} while (0)

/*
 * Configuration.
 */
struct listen_cfg {
	char		*address;	/* "host:port", host may be [v6] */
	char		*host;
	char		*port;
	char		*cert_file;	/* TLS when set */
	char		*key_file;
};

/* Where an upstream's credentials come from. */
enum cred_kind {
	CRED_NONE = 0,		/* anonymous */
	CRED_STATIC,		/* a username and password, resolved at load */
	CRED_ECR,		/* ECR GetAuthorizationToken, kept fresh */
	CRED_PASSTHROUGH	/* each client's own, relayed */
};

struct ecr_cfg {
	char		*region;
	char		*endpoint;	/* ECR API base URL */
	char		*registry_id;	/* NULL: the caller's default */
	char		*sts_endpoint;
	char		*imds_endpoint;
	char		*profile;	/* shared credentials file profile */
	int		 refresh_before_ms;
};

struct upstream_cfg {
	char		*name;
	char		*url;
	/* Parsed from url. */
	int		 tls;
	char		*host;		/* as in the URL, without brackets */
	char		*port;		/* explicit or 80/443 */
	char		*hostport;	/* host[:port] as written in the URL */
	char		*base_path;	/* "" or "/path" without trailing '/' */
	char		**aliases;
	size_t		 naliases;
	char		*prefix;	/* NULL or "a" / "a/b" */
	enum cred_kind	 cred_kind;
	char		*username;	/* CRED_STATIC, once resolved */
	char		*password;
	char		*username_env;	/* where they come from */
	char		*password_env;
	char		*password_file;
	char		*docker_config;
	struct ecr_cfg	 ecr;
	char		*ca_file;
	int		 tls_verify;
	int		 library_prefix; /* alpine -> library/alpine */
	int		 tag_ttl_ms;	/* tag -> digest served without asking */
	int		 negative_ttl_ms; /* an upstream 404 for a tag */
};

/*
 * The "auth" section: local clients log in to regcache with htpasswd
 * users, get tokens from regcache's own token service, and access rules
 * say who may pull what.
 */
struct user_entry {
	char		*name;
	char		*hash;		/* crypt(3): $2y$, $2b$, $2a$, $5$, $6$ */
};

struct access_group {
	char		*name;
	char		**users;
	size_t		 nusers;
};

struct access_rule {
	char		**users;	/* "*": every authenticated user */
	size_t		 nusers;
	char		**groups;
	size_t		 ngroups;
	int		 anonymous;	/* also clients without credentials */
	char		**upstreams;	/* NULL: every upstream */
	size_t		 nupstreams;
	char		**repos;	/* patterns; NULL: every repository */
	size_t		 nrepos;
	int		 allow;
};

struct access_cfg {
	char			*htpasswd;
	int64_t			 token_ttl_s;
	struct access_group	*groups;
	size_t			 ngroups;
	struct access_rule	*rules;
	size_t			 nrules;
	struct user_entry	*users;		/* loaded by config_validate() */
	size_t			 nusers;
};

enum log_level {
	LOG_LEVEL_ERROR = 0,
	LOG_LEVEL_WARN,
	LOG_LEVEL_INFO,
	LOG_LEVEL_DEBUG
};

/* How access-log lines are written ("log.access.format"). */
enum access_format {
	ACCESS_FORMAT_COMBINED = 0,	/* Apache combined plus key=value */
	ACCESS_FORMAT_JSON		/* one JSON object per line */
};

struct config {
	int			 refs;		/* the daemon's, its upstreams' */
	char			*path;		/* file it came from, or NULL */
	struct listen_cfg	*listens;
	size_t			 nlistens;
	struct upstream_cfg	*upstreams;
	size_t			 nupstreams;
	int			 default_upstream; /* index, -1 for none */
	char			*data_dir;
	int			 connect_timeout_ms;
	int			 first_byte_timeout_ms;
	int			 idle_timeout_ms;
	int			 client_timeout_ms;
	int			 drain_timeout_ms;	/* 0: exit at once */
	int			 max_connections;
	int			 max_header_bytes;
	int			 max_redirects;
	enum log_level		 log_level;
	enum access_format	 access_format;
	char			*access_file;	/* NULL: stderr */
	/* cache */
	uint64_t		 cache_max_bytes;	/* 0: no budget */
	int			 cache_high_water;	/* percent of max */
	int			 cache_low_water;	/* percent of max */
	int64_t			 cache_max_idle_s;	/* 0: no idle limit */
	struct access_cfg	*access;	/* "auth"; NULL: open pulls */
	struct listen_cfg	*admin;		/* NULL: no admin listener */
};

/* Overrides from the command line and the environment, applied last. */
struct config_overrides {
	const char	*listen;
	const char	*data_dir;
	const char	*upstream_url;
	const char	*log_level;
	const char	*admin;		/* an address, or "none" */
};

/*
 * Routing: which upstream a client's request goes to, and under what name.
 */
struct route {
	struct upstream		*upstream;
	int			 upstream_index;
	char			 name[V2_NAME_MAX + 16]; /* name upstream */
	const char		*ns;	/* honoured ns=, or NULL */
};

/*
 * The upstream side.
 */
struct token;
struct uphost;
struct cred;

/* A request waiting for an upstream's credentials (upstream_cred.c). */
struct cred_waiter {
	TAILQ_ENTRY(cred_waiter) entry;
	void			(*cb)(struct cred_waiter *, int ok);
	void			*arg;
	int			 queued;
};

/* A configured upstream at run time: its config, TLS context, auth state. */
struct upstream {
	struct upstream_cfg	*cfg;
	struct config		*owner;		/* cfg lives there */
	int			 refs;		/* see upstream.c */
	SSL_CTX			*ssl_ctx;	/* the upstream itself */
	SSL_CTX			*ssl_ctx_other;	/* realms, redirect targets */
	int			 basic_known;	/* upstream asked for Basic */
	TAILQ_HEAD(, token)	 tokens;	/* cached bearer tokens */
	struct cred		*cred;		/* regcache's own, if any */
	char			*pt_realm;	/* pass-through: its token realm */
};

enum up_error {
	UP_OK = 0,
	UP_ERR_DNS,
	UP_ERR_CONNECT,
	UP_ERR_TLS,
	UP_ERR_TIMEOUT,
	UP_ERR_RESET,		/* connection closed or reset mid-response */
	UP_ERR_PROTOCOL,	/* malformed response */
	UP_ERR_REDIRECTS,
	UP_ERR_AUTH,		/* token service failed */
	UP_ERR_CANCELLED,
	UP_ERR_INTERNAL
};

struct upreq;

/*
 * What a caller of upreq_* gets back.  on_headers runs once with the final
 * response (after redirects and auth), on_body any number of times with the
 * bytes that arrived (the callee takes what it wants out of the buffer;
 * what it leaves is dropped), on_done exactly once, last; after on_done the
 * upreq is freed.  No callback runs after upreq_cancel().
 */
struct upreq_cb {
	void	(*on_headers)(struct upreq *, int status,
		    struct evkeyvalq *headers, void *arg);
	void	(*on_body)(struct upreq *, struct evbuffer *data, void *arg);
	void	(*on_done)(struct upreq *, enum up_error err,
		    const char *cause, void *arg);
};

/*
 * Grammar checks of the distribution spec.
 */
enum v2_kind {
	V2_ROOT,
	V2_MANIFEST,
	V2_BLOB,
	V2_TAGS,
	V2_REFERRERS,
	V2_UNKNOWN
};

struct v2_path {
	enum v2_kind	 kind;
	char		 name[V2_NAME_MAX + 1];
	char		 ref[V2_DIGEST_MAX + 1];	/* tag or digest */
	int		 ref_is_digest;
};

/* One parsed WWW-Authenticate challenge. */
struct auth_challenge {
	char	scheme[16];	/* "Bearer" or "Basic" */
	char	*realm;
	char	*service;
	char	*scope;
	char	*error;
};

/* One parsed token-service answer. */
struct token_response {
	char	*token;
	long	 expires_in;
	time_t	 issued_at;	/* 0 when absent */
};

/* A parsed absolute URL. */
struct url {
	int	 tls;
	char	*host;		/* without brackets */
	char	*port;
	char	*path;		/* path and query, starts with '/' */
};

/* main.c */
extern struct event_base	*ev_base;
extern struct evdns_base	*dns_base;
extern struct config		*conf;

/* log.c */
void	 log_init(enum log_level, int);
void	 log_setlevel(enum log_level);
enum log_level log_getlevel(void);
int	 log_level_parse(const char *, enum log_level *);
void	 log_warn(const char *, ...) __attribute__((format(printf, 1, 2)));
void	 log_warnx(const char *, ...) __attribute__((format(printf, 1, 2)));
void	 log_info(const char *, ...) __attribute__((format(printf, 1, 2)));
void	 log_debug(const char *, ...) __attribute__((format(printf, 1, 2)));
void	 fatal(const char *, ...)
	    __attribute__((format(printf, 1, 2), noreturn));
void	 fatalx(const char *, ...)
	    __attribute__((format(printf, 1, 2), noreturn));

/*
 * One access-log line: a client request from its arrival to its last
 * byte.  Strings are as received (NULL: unknown or none); log.c escapes
 * them.  Written by log_access_entry(), never with secrets in it.
 */
struct access_entry {
	const char	*peer;
	const char	*user;		/* the authenticated user */
	const char	*method;
	const char	*uri;		/* path and query, as received */
	const char	*protocol;	/* "HTTP/1.1" */
	int		 status;
	uint64_t	 bytes;		/* body bytes sent */
	uint64_t	 duration_ms;
	int64_t		 ttfb_ms;	/* until the reply head went; -1 */
	const char	*upstream;
	const char	*cache;		/* the X-Cache verdict */
	const char	*referer;
	const char	*user_agent;
	const char	*why;		/* why it ended early */
};
int	 log_access_format_parse(const char *, enum access_format *);
int	 log_access_open(const char *, enum access_format, char *, size_t);
void	 log_access_reopen(void);
void	 log_access_close(void);
char	*log_access_render(const struct access_entry *, enum access_format,
	    const struct timespec *);
void	 log_access_entry(const struct access_entry *);

/* config.c */
struct config	*config_default(void);
struct config	*config_load(const char *, char *, size_t);
int		 config_apply_overrides(struct config *,
		    const struct config_overrides *, char *, size_t);
int		 config_validate(struct config *, char *, size_t);
void		 config_free(struct config *);
void		 config_unref(struct config *);
int		 config_parse_url(const char *, struct upstream_cfg *,
		    char *, size_t);

/* v2_grammar.c */
int	 v2_name_valid(const char *);
int	 v2_tag_valid(const char *);
int	 v2_digest_valid(const char *);
int	 v2_path_parse(const char *, struct v2_path *, const char **,
	    const char **);

/* route.c */
int	 route_resolve(struct upstream *const *, size_t, int, const char *,
	    const char *, struct route *, const char **, const char **);
int	 route_host_matches(const struct upstream_cfg *, const char *);

/* tls.c */
SSL_CTX	*tls_server_ctx(const char *, const char *, char *, size_t);
SSL_CTX	*tls_client_ctx(const char *, int, int, char *, size_t);
void	 tls_error_string(char *, size_t);

/* server.c */
/* One client connection; lives exactly as long as its evhttp_connection. */
struct client {
	uint32_t			 magic;
	LIST_ENTRY(client)		 entry;
	uint64_t			 id;
	struct evhttp_connection	*evcon;
	/* Called when the connection closes, for the exchange in flight. */
	void				(*gone_cb)(struct client *, void *);
	void				*gone_arg;
};
int	 server_start(struct config *);
void	 server_stop(void);
int	 server_reload_prepare(const struct config *, SSL_CTX ***, char *,
	    size_t);
void	 server_reload_abort(SSL_CTX **);
void	 server_reload_commit(struct config *, SSL_CTX **);
void	 server_drain(void);
int	 server_draining(void);
int	 server_client_count(void);
int	 server_listening(void);
struct client *server_client_get(struct evhttp_request *);

/* server_v2.c: one client request, an exchange, from its parsing to the
 * last byte of its reply. */
#define EXCHANGE_NS_MAX		256

/* What an access-log line keeps of a request from its arrival: the
 * request itself may be gone by the time the line is written. */
struct reqinfo {
	char		 proto[16];	/* "HTTP/1.1" */
	char		*referer;	/* NULL: none */
	char		*agent;		/* User-Agent; NULL: none */
	uint64_t	 t0_us;		/* stats_now_us() when it arrived */
	uint64_t	 head_us;	/* ... when the reply head went; 0 */
};

struct exchange {
	uint32_t		 magic;
	uint64_t		 id;
	struct evhttp_request	*req;	/* NULL once answered or gone */
	struct client		*client;
	struct upreq		*ur;	/* NULL once the upstream is done */
	struct v2_path		 p;
	struct route		 rt;
	char			 ns[EXCHANGE_NS_MAX];
	enum evhttp_cmd_type	 method;
	char			*uri;	/* for the access log */
	char			 peer[64];
	int			 status;
	int			 started;	/* reply headers sent */
	int			 paused;	/* upstream paused by us */
	int			 finishing;	/* upstream done, output draining */
	int			 unwritten;	/* a chunk awaits v2_written */
	uint64_t		 bytes;
	char			*upath;		/* path (and query) upstream */
	struct blobsrc		*src;		/* a blob from the cache */
	struct mop		*mop;		/* a manifest being resolved */
	const char		*xcache;	/* HIT, MISS, COALESCED... */
	char			*up_auth;	/* pass-through: the client's */
	int			 xrepo_status;	/* the upstream's answer to a
						 * confirmation, 0 before */
	char			*user;		/* the token's; NULL: none */
	char			*challenge;	/* WWW-Authenticate of a 401 */
	struct reqinfo		 info;		/* for the access log */
};

void	 v2_handle(struct evhttp_request *, void *);
size_t	 v2_send_error(struct evhttp_request *, int, const char *,
	    const char *);
size_t	 v2_send_error_header(struct evhttp_request *, int, const char *,
	    const char *, const char *, const char *);
void	 v2_peer(struct evhttp_request *, char *, size_t);
void	 v2_reqinfo_init(struct reqinfo *, struct evhttp_request *);
void	 v2_reqinfo_clear(struct reqinfo *);
int64_t	 v2_reqinfo_ttfb(const struct reqinfo *);
int64_t	 v2_reqinfo_ms(const struct reqinfo *);
void	 v2_reqinfo_head(struct reqinfo *);
void	 v2_quick_error(struct evhttp_request *, const char *, int,
	    const char *, const char *);
const char *v2_method_name(enum evhttp_cmd_type);
void	 v2_common_headers(struct evhttp_request *);
void	 v2_passthrough(struct exchange *);
void	 v2_dispatch(struct exchange *);
void	 v2_root_reply(struct exchange *);
void	 v2_fail(struct exchange *, int, const char *, const char *,
	    const char *);
void	 v2_abort(struct exchange *, const char *);
void	 v2_reply_start(struct exchange *, int);
void	 v2_send_chunk(struct exchange *, struct evbuffer *);
void	 v2_reply_finish(struct exchange *);
void	 exchange_close(struct exchange *, const char *);
void	 exchange_replied(struct exchange *);
struct evbuffer *v2_output(struct exchange *);

/* server_passthrough.c: clients' own credentials for an upstream. */
#define PT_RELAY_PATH		"/auth/passthrough/"
int	 pt_check(struct exchange *);
void	 pt_relay(struct evhttp_request *, const char *, const char *);
int	 pt_relay_busy(struct client *, struct evhttp_request *);
char	*pt_challenge(struct exchange *, struct evkeyvalq *);
void	 pt_shutdown(void);

/* server_auth.c: regcache's token service and its checks on /v2/. */
#define AUTH_TOKEN_PATH		"/auth/token"
#define AUTH_SERVICE		"regcache"
int	 server_auth_init(struct config *);
void	 server_auth_shutdown(void);
void	 server_auth_token(struct evhttp_request *, struct client *);
void	 server_auth_origin(struct evhttp_request *, char *, size_t);
int	 server_auth_authenticate(struct exchange *, const char **,
	    const char **);
int	 server_auth_authorize(struct exchange *, const char **,
	    const char **);

/* access.c: who may pull what. */
int	 access_pattern_valid(const char *);
int	 access_pattern_match(const char *, const char *);
int	 access_check(const struct access_cfg *, const char *, const char *,
	    const char *);
int	 access_anonymous_allowed(const struct access_cfg *);

/*
 * worker.c: one thread for jobs too slow for the loop; completions run
 * back on the loop.  The owner sets the first six members; the rest is
 * worker.c's, initialised by WORKER_INIT(the variable).
 */
struct worker_job {
	TAILQ_ENTRY(worker_job)	 wj_entry;	/* first in the owner's job */
};
TAILQ_HEAD(worker_jobs, worker_job);
struct worker {
	const char		*w_subsystem;	/* "auth: no password worker" */
	const char		*w_name;
	int			 w_drain;	/* run queued jobs at stop */
	void			(*w_run)(struct worker_job *);	/* thread */
	void			(*w_complete)(struct worker_job *); /* loop */
	void			(*w_discard)(struct worker_job *); /* stop */
	pthread_t		 w_thread;
	int			 w_running;
	int			 w_stop;
	int			 w_failed;
	pthread_mutex_t		 w_lock;
	pthread_cond_t		 w_cond;
	struct worker_jobs	 w_queue;
	struct worker_jobs	 w_done;
	int			 w_pipe[2];
	struct event		*w_ev;
};
#define WORKER_INIT(w)						\
	.w_lock = PTHREAD_MUTEX_INITIALIZER,				\
	.w_cond = PTHREAD_COND_INITIALIZER,				\
	.w_queue = TAILQ_HEAD_INITIALIZER((w).w_queue),			\
	.w_done = TAILQ_HEAD_INITIALIZER((w).w_done),			\
	.w_pipe = { -1, -1 }
int	 worker_start(struct worker *);
void	 worker_queue(struct worker *, struct worker_job *);
void	 worker_stop(struct worker *);

/* users.c: htpasswd users; passwords are checked on a worker thread. */
#define USERS_NAME_MAX		255
#define USERS_PASSWORD_MAX	255
#define USERS_GOOD		1	/* users_verify: known good (cached) */
#define USERS_QUEUED		0	/* the callback will tell */
#define USERS_BUSY		(-1)	/* too many checks waiting */
int	 users_name_valid(const char *);
int	 users_parse(const char *, size_t, struct user_entry **, size_t *,
	    char *, size_t);
int	 users_load(const char *, struct user_entry **, size_t *, char *,
	    size_t);
void	 users_free(struct user_entry *, size_t);
const struct user_entry *users_find(const struct user_entry *, size_t,
	    const char *);
int	 users_hash_check(const char *, const char *);
int	 users_verify(const struct access_cfg *, const char *, const char *,
	    uint64_t, void (*)(uint64_t, int));
void	 users_shutdown(void);
void	 users_cache_flush(void);

/* jwt.c: HS256 JSON Web Tokens and their key file. */
#define JWT_KEY_LEN		32
#define JWT_SKEW_S		30	/* clock skew allowed on exp and nbf */
struct json_t;
int	 jwt_key_load(const char *, unsigned char *, size_t, char *, size_t);
char	*jwt_sign(const unsigned char *, size_t, struct json_t *);
int	 jwt_verify(const unsigned char *, size_t, const char *, time_t,
	    const char *, const char *, struct json_t **);

/* cache_fill.c: one upstream fetch per digest, streamed to every reader. */
enum fill_state {
	FILL_RUNNING,
	FILL_PUBLISHING,	/* verified; being made durable */
	FILL_DONE,		/* verified and published */
	FILL_FAILED,		/* readers must abort */
	FILL_UPSTREAM_ERROR	/* the upstream said no: pass it on */
};

enum fill_event {
	FILL_EV_HEAD,		/* the upstream answered 200: size known */
	FILL_EV_DATA,		/* more bytes are available */
	FILL_EV_DONE,
	FILL_EV_FAILED,
	FILL_EV_UPSTREAM_ERROR
};

struct fill;
struct fill_reader {
	TAILQ_ENTRY(fill_reader) entry;
	struct fill		*fill;
	void			(*cb)(struct fill_reader *, enum fill_event);
	void			*arg;
};

struct fill {
	uint32_t		 magic;
	uint64_t		 id;
	TAILQ_ENTRY(fill)	 entry;
	char			 digest[V2_DIGEST_MAX + 1];
	char			*upstream_name;
	char			*repo;
	struct upreq		*ur;
	int			 fd;		/* the tmp file, then the blob */
	char			*tmp;
	int64_t			 size;		/* -1 until known */
	uint64_t		 written;
	uint64_t		 reserved;	/* counted in fill_bytes_inflight */
	EVP_MD_CTX		*md;
	enum fill_state		 state;
	int			 have_head;
	int			 status;	/* the upstream's */
	enum up_error		 up_error;
	int			 disk_error;
	int			 no_store;	/* too big for the budget */
	struct evkeyvalq	 err_headers;
	struct evbuffer		*err_body;
	TAILQ_HEAD(, fill_reader) readers;
	int			 busy;
};

extern uint64_t	fill_bytes_inflight;
struct fill	*fill_find(const char *);
struct fill	*fill_start(struct upstream *, const char *, const char *,
		    const char *);
void		 fill_join(struct fill *, struct fill_reader *);
void		 fill_leave(struct fill_reader *);
uint64_t	 fill_available(const struct fill *);
void		 fill_shutdown(void);
size_t		 fill_count(void);

/* cache_evict.c: the byte budget. */
void	 cache_make_room(uint64_t);
uint64_t cache_blob_limit(void);
void	 cache_after_store(void);
int	 cache_evict_start(void);
void	 cache_evict_stop(void);
int	 cache_evict_run(uint64_t, int64_t, int);


/*
 * stats.c: what the daemon counts, for the admin listener's /stats and
 * /metrics.  The plain counters are bumped where things happen; requests,
 * upstreams and credentials go through the functions below.
 */
enum stats_route {
	STATS_ROUTE_ROOT,
	STATS_ROUTE_MANIFEST,
	STATS_ROUTE_BLOB,
	STATS_ROUTE_TAGS,
	STATS_ROUTE_REFERRERS,
	STATS_ROUTE_TOKEN,	/* /auth/token */
	STATS_ROUTE_RELAY,	/* /auth/passthrough/NAME */
	STATS_ROUTE_OTHER,
	STATS_ROUTE_COUNT
};

struct stats {
	uint64_t	hits;
	uint64_t	misses;
	uint64_t	coalesced;
	uint64_t	stale_served;
	uint64_t	revalidations;
	uint64_t	negative_hits;
	uint64_t	fills_started;
	uint64_t	fills_done;
	uint64_t	fills_failed;
	uint64_t	fill_readers_joined;	/* joined a fill in flight */
	uint64_t	fill_bytes;		/* written into fills */
	uint64_t	fill_disk_errors;
	uint64_t	digest_mismatches;
	/* Content sent to clients: what the cache held (or a fill started
	 * for another client brought), and what was fetched for them. */
	uint64_t	bytes_from_cache;
	uint64_t	bytes_from_upstream;
	uint64_t	evictions;
	uint64_t	evicted_bytes;
	uint64_t	connections_total;
};
extern struct stats	stats;

#define STATS_HIST_BOUNDS	13

/* A latency histogram: counts per bucket (not cumulative), the last one
 * past the largest bound. */
struct stats_hist {
	uint64_t	buckets[STATS_HIST_BOUNDS + 1];
	uint64_t	count;
	uint64_t	sum_us;
};

void	 stats_init(const struct config *);
void	 stats_upstreams_add(const struct config *);
void	 stats_shutdown(void);
uint64_t stats_now_us(void);
const char *stats_route_name(enum stats_route);
enum stats_route stats_route_of_kind(enum v2_kind);
enum stats_route stats_route_of_path(const char *);
void	 stats_request(enum stats_route, int, uint64_t, uint64_t);
void	 stats_hist_add(struct stats_hist *, uint64_t);
void	 stats_upstream_response(const char *, int, const struct evkeyvalq *);
void	 stats_upstream_error(const char *, enum up_error, int);
void	 stats_cred_refresh(const char *, int);
void	 stats_token_fetch(const char *, int);
int64_t	 stats_ratelimit_parse(const char *);
char	*stats_label_escape(const char *);
void	 stats_hist_render(struct evbuffer *, const char *, const char *,
	    const struct stats_hist *);
void	 stats_render_metrics(struct evbuffer *);
struct json_t *stats_json(void);

/* server_admin.c: the admin listener (/stats, /metrics, /healthz,
 * /readyz), off the clients' ports. */
int	 admin_start(const struct config *);
void	 admin_stop(void);

/* stats_cli.c: `regcache stats [URL]`. */
int	 stats_cli_main(int, char **);

/* server_manifest.c: manifests by digest and by tag, with TTLs. */
struct mop;
int	 manifest_handle(struct exchange *);
void	 manifest_op_free(struct exchange *);
void	 manifest_accept_all(struct upreq *);

/* server_blob.c: blobs from the cache, and fills shared by readers. */
struct blobsrc;
int	 blob_handle(struct exchange *);
void	 blob_pump(struct exchange *);
void	 blob_src_free(struct exchange *);
void	 blob_rerun(struct exchange *);

/* server_xrepo.c: cached digests confirmed per repository first when the
 * upstream is credentialed. */
int	 xrepo_needed(struct exchange *);
void	 xrepo_confirm(struct exchange *);

/* upstream.c */
int	 upstream_init(struct config *);
void	 upstream_shutdown(void);
struct upstream **upstream_build(struct config *, char *, size_t);
void	 upstream_install(struct upstream **, size_t);
void	 upstream_install_abort(struct upstream **, size_t);
void	 upstream_ref(struct upstream *);
void	 upstream_unref(struct upstream *);
struct upstream *upstream_get(size_t);
struct upstream *const *upstream_all(void);
size_t	 upstream_count(void);
struct upreq *upreq_new(struct upstream *, enum evhttp_cmd_type,
	    const char *, const char *, const struct upreq_cb *, void *);
void	 upreq_add_header(struct upreq *, const char *, const char *);
void	 upreq_set_auth(struct upreq *, const char *);
void	 upreq_start(struct upreq *);
void	 upreq_pause(struct upreq *);
void	 upreq_resume(struct upreq *);
void	 upreq_cancel(struct upreq *);
uint64_t upreq_id(const struct upreq *);
int	 upreq_on_origin(const struct upreq *);
const char *up_error_str(enum up_error);

/* upstream_cred.c: regcache's own credentials for an upstream. */
int	 cred_resolve(struct upstream_cfg *, char *, size_t);
void	 cred_start(struct upstream *);
void	 cred_stop(struct upstream *);
int	 cred_has(const struct upstream *);
int	 cred_get(struct upstream *, const char **, const char **,
	    uint64_t *);
void	 cred_wait(struct upstream *, struct cred_waiter *);
void	 cred_unwait(struct upstream *, struct cred_waiter *);
int	 cred_reauth(struct upstream *, uint64_t);
void	 secret_file_check_mode(const char *, const char *, int);
int	 secret_file_read(const char *, const char *, int, char **, size_t *,
	    char *, size_t);

/* aws_creds.c: ECR registry credentials from the AWS credential chain. */
struct ecr_token {
	char		*user;
	char		*pass;
	int64_t		 expires_ms;	/* unix milliseconds */
};
struct ecr_fetch;
struct aws_state;
struct aws_state *aws_state_new(void);
void	 aws_state_free(struct aws_state *);
int	 aws_endpoint_check(const char *, const char *, char *, size_t);
struct ecr_fetch *ecr_fetch_start(struct upstream *, struct aws_state *,
	    void (*)(const struct ecr_token *, const char *, void *), void *);
void	 ecr_fetch_cancel(struct ecr_fetch *);

/* upstream_auth.c */
int	 auth_parse_challenge(const char *, struct auth_challenge *);
void	 auth_challenge_clear(struct auth_challenge *);
int	 auth_parse_token_response(const char *, size_t,
	    struct token_response *, char *, size_t);
void	 auth_token_response_clear(struct token_response *);
const char *auth_token_lookup(struct upstream *, const char *, time_t);
void	 auth_token_store(struct upstream *, const char *, const char *,
	    time_t);
void	 auth_token_forget(struct upstream *, const char *, const char *);
void	 auth_tokens_free(struct upstream *);
time_t	 auth_token_expiry(const struct token_response *, time_t);

/* upstream_http.c: one HTTP/1.1 exchange on a pooled connection. */
struct httpx;
struct httpx_cb {
	void	(*on_headers)(struct httpx *, int status,
		    struct evkeyvalq *headers, void *arg);
	void	(*on_body)(struct httpx *, struct evbuffer *, void *arg);
	void	(*on_done)(struct httpx *, enum up_error, const char *,
		    void *arg);
};
struct httpx *httpx_start(const struct url *, SSL_CTX *,
	    enum evhttp_cmd_type, struct evkeyvalq *, const void *, size_t,
	    const struct httpx_cb *, void *);
void	 httpx_pause(struct httpx *);
void	 httpx_resume(struct httpx *);
void	 httpx_cancel(struct httpx *);
void	 httpx_pool_flush(void);

/* cache_index.c: the LMDB index of the cache (docs/ARCHITECTURE.md). */
#define IDX_MEDIA_MAX		128
#define IDX_ETAG_MAX		160

struct idx_blob {
	uint64_t	size;
	int64_t		stored;		/* unix seconds */
	int64_t		last_served;	/* unix seconds */
	uint64_t	hits;
	char		media_type[IDX_MEDIA_MAX]; /* manifests; "" for blobs */
};

struct idx_tag {
	char		digest[V2_DIGEST_MAX + 1];	/* "" when negative */
	char		media_type[IDX_MEDIA_MAX];
	char		etag[IDX_ETAG_MAX];
	int64_t		fetched_ms;	/* unix milliseconds */
	int		negative;	/* the upstream said 404 */
};

struct idx_tag_key {
	const char	*upstream;
	const char	*repo;
	const char	*tag;
	const char	*accept_class;
};

int	 idx_open(const char *, int, char *, size_t);
void	 idx_close(void);
int	 idx_blob_get(const char *, struct idx_blob *);
int	 idx_blob_put(const char *, const struct idx_blob *, const char *,
	    const char *);
int	 idx_blob_del(const char *);
int	 idx_blob_seen_in(const char *, const char *, const char *);
int	 idx_blob_known_in(const char *, const char *, const char *);
int	 idx_tag_get(const struct idx_tag_key *, struct idx_tag *);
int	 idx_tag_put(const struct idx_tag_key *, const struct idx_tag *);
int	 idx_tag_del(const struct idx_tag_key *);
void	 idx_touch(const char *, int64_t);
int	 idx_flush_touches(void);
int	 idx_blob_iter(int (*)(const char *, const struct idx_blob *, void *),
	    void *);
int	 idx_tag_iter(int (*)(const struct idx_tag_key *,
	    const struct idx_tag *, void *), void *);
int	 idx_repo_iter(const char *, int (*)(const char *, const char *,
	    void *), void *);
uint64_t idx_total_bytes(void);
uint64_t idx_blob_count(void);
int	 idx_is_open(void);
void	 idx_resync(void);

/* cache_store.c */
#define CACHE_STORE_RW		0	/* tools */
#define CACHE_STORE_RDONLY	1	/* tools that only look */
#define CACHE_STORE_DAEMON	2	/* locks the directory, clears tmp/ */
int	 cache_store_open(const char *, int, char *, size_t);
void	 cache_store_close(void);
const char *cache_store_dir(void);
int	 cache_blob_path(const char *, char *, size_t);
int	 cache_tmp_create(const char *, char **);
int	 cache_publish(int, const char *, const char *, uint64_t,
	    const char *, const char *, const char *);
void	 cache_publish_async(int, const char *, const char *, uint64_t,
	    const char *, const char *, uint64_t, void (*)(uint64_t, int));
void	 cache_publish_drain(void);
int	 cache_blob_open(const char *, struct idx_blob *);
int	 cache_blob_remove(const char *);
int	 cache_blob_read(const char *, struct evbuffer *, struct idx_blob *,
	    uint64_t);

/* cache_tools.c: the maintenance commands verify, gc and ls. */
int	 cache_tool_verify(const struct config *, int);
int	 cache_tool_gc(const struct config *, int);
int	 cache_tool_ls(const struct config *, int);

/* warm.c: the `regcache warm` command, a client of a running regcache. */
int	 warm_main(int, char **);

/* aws_sigv4.c: AWS Signature Version 4 for AWS API calls (ECR tokens). */
#define SIGV4_DATE_LEN	17	/* "20150830T123600Z" and its NUL */
struct sigv4_request {
	const char		*method;
	const char		*path;		/* raw, may include ?query */
	const struct evkeyvalq	*headers;	/* several of one name allowed */
	const void		*body;
	size_t			 body_len;
};
struct sigv4_creds {
	const char		*access_key;
	const char		*secret_key;
	const char		*session_token;	/* NULL if none */
};
int	 sigv4_amz_date(time_t, char *, size_t);
int	 sigv4_sign(const struct sigv4_request *, const struct sigv4_creds *,
	    const char *, const char *, time_t, char **, char **, char **);

/* util.c */
void	*xcalloc(size_t, size_t);
char	*xstrdup(const char *);
char	*xstrndup(const char *, size_t);
int	 xasprintf(char **, const char *, ...)
	    __attribute__((format(printf, 2, 3)));
size_t	 strlcpy_rc(char *, const char *, size_t);
int	 url_parse(const char *, struct url *);
void	 url_clear(struct url *);
char	*url_resolve(const struct url *, const char *);
char	*base64_encode(const void *, size_t);
char	*base64_decode(const char *, size_t *);
void	 evbuffer_wipe(struct evbuffer *);
char	*evbuffer_take_secret(struct evbuffer *, size_t *);
void	 secret_buf_free(char *, size_t);
void	 headers_wipe_value(struct evkeyvalq *, const char *);
void	 json_string_wipe(struct json_t *, const char *);
void	 headers_wipe(struct evkeyvalq *);
void	 secret_free(char **);
char	*url_host_header(const struct url *);
int	 hexval(int);
int	 uri_query_get(const char *, const char *, char *, size_t);
char	*uri_escape(const char *);
int	 time_parse_rfc3339(const char *, time_t *);
uint64_t mono_ms(void);
int	 mkdir_p(const char *, mode_t);
int	 headers_copy(struct evkeyvalq *, const struct evkeyvalq *,
	    const char *);
void	 headers_clear(struct evkeyvalq *);
char	*log_escape(const char *);
int	 fd_read_into(int, uint64_t, size_t, struct evbuffer *);
int	 fd_write_all(int, const void *, size_t);
#define FILE_READ_REGULAR	0x1	/* file_read: refuse other files */
struct stat;
int	 file_read(const char *, size_t, int, struct stat *, char **,
	    size_t *, char *, size_t);

#endif /* REGCACHE_H */

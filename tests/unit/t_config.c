/*
 * Unit tests of src/config.c: the embedded defaults, files good and bad
 * (each error with its line, column and key path), the overrides and the
 * URL parser.  Files are written under $TMPDIR and removed afterwards.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "regcache.h"
#include "tap.h"

/* The library refers to these; main.c defines them in the daemon. */
struct event_base	*ev_base;
struct evdns_base	*dns_base;
struct config		*conf;

/* The start of a file with one upstream "a", for the error cases. */
#define UP_A	"{\"upstreams\": [{\"name\": \"a\", \"url\": \"http://a\","

static char	 tmpdir[512];

/* Writes text to a new temporary file and returns its name. */
static char *
write_temp(const char *text)
{
	char	*path;
	FILE	*f;
	int	 fd;

	if (asprintf(&path, "%s/t_config.XXXXXX", tmpdir) == -1)
		abort();
	if ((fd = mkstemp(path)) == -1 || (f = fdopen(fd, "w")) == NULL) {
		perror(path);
		exit(1);
	}
	fputs(text, f);
	fclose(f);
	return path;
}

/*
 * Loads text as a file.  On error, the message minus the temporary file's
 * name goes to msg, so it reads ":3:3: bogus: unknown key".
 */
static struct config *
load_text(const char *text, char *msg, size_t len)
{
	struct config	*cf;
	char		 err[1024], *path = write_temp(text);
	size_t		 n = strlen(path);

	msg[0] = '\0';
	err[0] = '\0';
	cf = config_load(path, err, sizeof(err));
	if (cf == NULL) {
		if (strncmp(err, path, n) == 0)
			snprintf(msg, len, "%s", err + n);
		else
			snprintf(msg, len, "(no file name) %s", err);
	}
	unlink(path);
	free(path);
	return cf;
}

/* Loads text that must fail, and returns the message (static buffer). */
static const char *
load_error(const char *text)
{
	static char	 msg[1024];
	struct config	*cf;

	if ((cf = load_text(text, msg, sizeof(msg))) != NULL) {
		config_free(cf);
		return "(loaded)";
	}
	return msg;
}

/* The embedded configuration, with nothing loaded. */
static void
test_defaults(void)
{
	struct config		*cf = config_default();
	struct upstream_cfg	*u = &cf->upstreams[0];
	char			 err[256] = "";

	ok(cf->nlistens == 1, "default: one listener");
	is_str(cf->listens[0].address, DEFAULT_LISTEN, "default: listen");
	is_str(cf->listens[0].host, "127.0.0.1", "default: listen host");
	is_str(cf->listens[0].port, "5000", "default: listen port");
	ok(cf->listens[0].cert_file == NULL, "default: plain HTTP");
	is_str(cf->data_dir, DEFAULT_DATA_DIR, "default: data_dir");
	ok(cf->nupstreams == 1 && cf->default_upstream == 0,
	    "default: one upstream, the default");
	is_str(u->name, DEFAULT_UPSTREAM_NAME, "default: upstream name");
	is_str(u->hostport, "registry-1.docker.io", "default: hostport");
	ok(u->tls && strcmp(u->port, "443") == 0 && u->base_path[0] == '\0',
	    "default: https, port 443, no base path");
	ok(u->naliases == 2 && strcmp(u->aliases[0], "docker.io") == 0 &&
	    strcmp(u->aliases[1], "index.docker.io") == 0,
	    "default: aliases docker.io and index.docker.io");
	ok(u->library_prefix && u->tls_verify && u->username == NULL,
	    "default: library prefix, verify TLS, anonymous");
	ok(cf->connect_timeout_ms == DEFAULT_CONNECT_TIMEOUT_MS &&
	    cf->first_byte_timeout_ms == DEFAULT_FIRST_BYTE_TIMEOUT_MS &&
	    cf->idle_timeout_ms == DEFAULT_IDLE_TIMEOUT_MS &&
	    cf->client_timeout_ms == DEFAULT_CLIENT_TIMEOUT_MS,
	    "default: timeouts");
	ok(cf->max_connections == DEFAULT_MAX_CONNECTIONS &&
	    cf->max_header_bytes == DEFAULT_MAX_HEADER_BYTES &&
	    cf->max_redirects == DEFAULT_MAX_REDIRECTS &&
	    cf->log_level == LOG_LEVEL_INFO, "default: limits and log level");
	ok(cf->access_format == ACCESS_FORMAT_COMBINED &&
	    cf->access_file == NULL, "default: combined access log on stderr");
	ok(u->tag_ttl_ms == DEFAULT_TAG_TTL_MS &&
	    u->negative_ttl_ms == DEFAULT_NEGATIVE_TTL_MS,
	    "default: tag and negative TTLs");
	ok(cf->cache_max_bytes == 0 && cf->cache_max_idle_s == 0 &&
	    cf->cache_high_water == DEFAULT_CACHE_HIGH_WATER &&
	    cf->cache_low_water == DEFAULT_CACHE_LOW_WATER,
	    "default: no cache budget, water marks, no idle limit");
	ok(config_validate(cf, err, sizeof(err)) == 0,
	    "default: validates (%s)", err);
	config_free(cf);
}

/* A file that sets every key, TLS files and all. */
static void
test_full_file(void)
{
	struct config		*cf;
	struct upstream_cfg	*u;
	char			*crt = write_temp("cert");
	char			*key = write_temp("key");
	char			*ca = write_temp("ca"), *text, msg[1024];
	char			 err[1024] = "";

	if (asprintf(&text,
	    "{\n"
	    "  \"listen\": [ \"127.0.0.1:5000\", \":5001\",\n"
	    "    {\"address\": \"[::1]:5443\",\n"
	    "     \"tls\": {\"certificate\": \"%s\", \"key\": \"%s\"}} ],\n"
	    "  \"data_dir\": \"/var/cache/regcache\",\n"
	    "  \"default_upstream\": \"ghcr\",\n"
	    "  \"upstreams\": [\n"
	    "    { \"name\": \"docker.io\",\n"
	    "      \"url\": \"https://registry-1.docker.io\",\n"
	    "      \"aliases\": [\"docker.io\", \"Index.Docker.IO\"],\n"
	    "      \"prefix\": \"dockerhub\",\n"
	    "      \"auth\": {\"username\": \"u\",\n"
	    "               \"password\": \"p\"} },\n"
	    "    { \"name\": \"ghcr\",\n"
	    "      \"url\": \"https://GHCR.io:8443/v2x/\",\n"
	    "      \"prefix\": \"gh/cr\", \"auth\": null,\n"
	    "      \"ca_file\": \"%s\",\n"
	    "      \"tls_verify\": false, \"library_prefix\": true },\n"
	    "    { \"name\": \"local\", \"url\": \"http://[::1]\" }\n"
	    "  ],\n"
	    "  \"timeouts\": {\"connect\": 2.5, \"first_byte\": 30,\n"
	    "                \"idle\": 1, \"client\": 600},\n"
	    "  \"limits\": {\"max_connections\": 10,\n"
	    "             \"max_header_bytes\": 2048,\n"
	    "             \"max_redirects\": 0},\n"
	    "  \"log\": {\"level\": \"debug\"}\n"
	    "}\n", crt, key, ca) == -1)
		abort();
	cf = load_text(text, msg, sizeof(msg));
	ok(cf != NULL, "full file loads%s%s", cf ? "" : ": ", msg);
	if (cf == NULL)
		goto out;
	ok(cf->nlistens == 3, "full: three listeners");
	ok(strcmp(cf->listens[1].host, "0.0.0.0") == 0 &&
	    strcmp(cf->listens[1].port, "5001") == 0,
	    "full: \":5001\" listens on 0.0.0.0");
	ok(strcmp(cf->listens[2].host, "::1") == 0 &&
	    strcmp(cf->listens[2].cert_file, crt) == 0 &&
	    strcmp(cf->listens[2].key_file, key) == 0,
	    "full: IPv6 TLS listener");
	is_str(cf->data_dir, "/var/cache/regcache", "full: data_dir");
	ok(cf->nupstreams == 3 && cf->default_upstream == 1,
	    "full: three upstreams, default ghcr");
	u = &cf->upstreams[0];
	ok(u->naliases == 2 && strcmp(u->aliases[1], "index.docker.io") == 0,
	    "full: aliases are lower-cased");
	ok(u->library_prefix && strcmp(u->prefix, "dockerhub") == 0 &&
	    strcmp(u->username, "u") == 0 && strcmp(u->password, "p") == 0,
	    "full: docker hub prefix, library_prefix default, auth");
	u = &cf->upstreams[1];
	ok(strcmp(u->host, "ghcr.io") == 0 && strcmp(u->port, "8443") == 0 &&
	    strcmp(u->hostport, "ghcr.io:8443") == 0 &&
	    strcmp(u->base_path, "/v2x") == 0,
	    "full: ghcr URL parts");
	ok(u->username == NULL && !u->tls_verify && u->library_prefix &&
	    strcmp(u->ca_file, ca) == 0, "full: ghcr options");
	u = &cf->upstreams[2];
	ok(!u->tls && strcmp(u->port, "80") == 0 &&
	    strcmp(u->hostport, "[::1]") == 0 && !u->library_prefix &&
	    u->tls_verify, "full: plain upstream defaults");
	ok(cf->connect_timeout_ms == 2500 && cf->first_byte_timeout_ms ==
	    30000 && cf->idle_timeout_ms == 1000 &&
	    cf->client_timeout_ms == 600000, "full: timeouts in ms");
	ok(cf->max_connections == 10 && cf->max_header_bytes == 2048 &&
	    cf->max_redirects == 0 && cf->log_level == LOG_LEVEL_DEBUG,
	    "full: limits and log level");
	ok(config_validate(cf, err, sizeof(err)) == 0,
	    "full: validates (%s)", err);
	unlink(ca);
	ok(config_validate(cf, err, sizeof(err)) == -1 &&
	    strstr(err, "ca_file") != NULL && strstr(err, "ghcr") != NULL,
	    "full: missing ca_file is caught by validate (%s)", err);
	config_free(cf);
 out:
	unlink(crt);
	unlink(key);
	unlink(ca);
	free(crt);
	free(key);
	free(ca);
	free(text);
}

/* Bad files: each message with its line, column and key path. */
static void
test_errors(void)
{
	const char	*m;

	m = load_error("{\n  \"listen\": [\n    \"127.0.0.1:5000\",\n  ]\n}\n");
	ok(strncmp(m, ":4:3: ", 6) == 0, "syntax error has line:col (%s)", m);

	m = load_error("{\n  \"data_dir\": \"x\",\n  \"bogus\": 1\n}\n");
	is_str(m, ":3:3: bogus: unknown key", "unknown key at the top");

	m = load_error(
	    "{\n"
	    "  \"upstreams\": [\n"
	    "    {\"name\": \"a\", \"url\": \"https://a.example\"},\n"
	    "    {\"name\": \"b\", \"url\": \"https://b.example\",\n"
	    "     \"auth\": {\"username\": \"u\", \"pasword\": \"p\"}}\n"
	    "  ]\n"
	    "}\n");
	is_str(m, ":5:32: upstreams[1].auth.pasword: unknown key",
	    "unknown nested key");

	m = load_error("{\"data_dir\": \"\xc3\xa9t\xc3\xa9\", "
	    "\"lo\\u0067\": {\"level\": \"x\"}}");
	is_str(m, ":1:34: log.level: level \"x\" must be one of error, warn, "
	    "info, debug", "escaped key found, columns in characters");

	m = load_error("{\"timeouts\": {\"connect\": \"10\"}}");
	is_str(m, ":1:15: timeouts.connect: expected a number of seconds, "
	    "got a string", "wrong type names the expected one");

	m = load_error("{\"limits\": {\"max_redirects\": 1.5}}");
	is_str(m, ":1:13: limits.max_redirects: expected an integer, got a "
	    "real number", "limits want integers");

	m = load_error("{\"limits\": {\"max_header_bytes\": 100}}");
	ok(strstr(m, "from 1024 to 1048576") != NULL,
	    "max_header_bytes range (%s)", m);

	m = load_error("{\"listen\": \"127.0.0.1:5000\"}");
	is_str(m, ":1:2: listen: expected an array, got a string",
	    "listen must be an array");

	m = load_error("{\"listen\": [\"127.0.0.1\"]}");
	ok(strstr(m, ":1:13: listen[0]: ") == m && strstr(m, "port") != NULL,
	    "listen address without port (%s)", m);

	m = load_error("{\"listen\": [{\"address\": \":99999\"}]}");
	ok(strstr(m, "listen[0].address: ") != NULL &&
	    strstr(m, "1 to 65535") != NULL, "listen port range (%s)", m);

	m = load_error("{\"listen\": [{\"address\": \":1\", \"tls\": "
	    "{\"certificate\": \"c\"}}]}");
	ok(strstr(m, "listen[0].tls: ") != NULL &&
	    strstr(m, "both or neither") != NULL, "tls needs both (%s)", m);

	m = load_error(
	    "{\n"
	    "  \"upstreams\": [\n"
	    "    {\"name\": \"a\", \"url\": \"https://a.example\"},\n"
	    "    {\"name\": \"b\",\n"
	    "      \"url\": \"ftp://b.example\"}\n"
	    "  ]\n"
	    "}\n");
	is_str(m, ":5:7: upstreams[1].url: scheme must be http or https",
	    "bad url scheme");

	m = load_error("{\"upstreams\": [{\"name\": \"a\", "
	    "\"url\": \"https://u:hunter2@a.example\"}]}");
	ok(strstr(m, "user information") != NULL &&
	    strstr(m, "hunter2") == NULL, "userinfo refused, not echoed (%s)",
	    m);

	m = load_error(UP_A
	    " \"auth\": {\"username\": \"u\", \"password\": \"s3cr3t\\q\"}}]}");
	ok(m[0] == ':' && strstr(m, "s3cr3t") == NULL,
	    "syntax error does not quote a password (%s)", m);

	m = load_error(UP_A
	    " \"auth\": {\"username\": \"u\", \"password\": \"\"}}]}");
	ok(strstr(m, "upstreams[0].auth.password: must not be empty") != NULL,
	    "empty password (%s)", m);

	m = load_error(UP_A
	    " \"auth\": {\"username\": \"u\"}}]}");
	ok(strstr(m, "upstreams[0].auth: give the password as one of") !=
	    NULL, "password required with a username (%s)", m);

	m = load_error(
	    "{\"upstreams\": [\n"
	    "  {\"name\": \"a\", \"url\": \"https://a.example\"},\n"
	    "  {\"name\": \"a\", \"url\": \"https://b.example\"}]}\n");
	is_str(m, ":3:4: upstreams[1].name: upstream name \"a\" is already "
	    "used by upstreams[0]", "duplicate upstream name");

	m = load_error(
	    "{\"upstreams\": [\n"
	    "  {\"name\": \"a\", \"url\": \"https://a.example\",\n"
	    "   \"aliases\": [\"mirror.example\"]},\n"
	    "  {\"name\": \"b\", \"url\": \"https://b.example\",\n"
	    "   \"aliases\": [\"b\", \"MIRROR.example\"]}]}\n");
	is_str(m, ":5:21: upstreams[1].aliases[1]: host \"mirror.example\" "
	    "already routes to upstream \"a\"", "duplicate alias");

	m = load_error(
	    "{\"upstreams\": [\n"
	    "  {\"name\": \"a\", \"url\": \"https://a.example\"},\n"
	    "  {\"name\": \"b\", \"url\": \"https://A.example/other\"}]}\n");
	ok(strstr(m, ":3:17: upstreams[1].url: host \"a.example\"") == m,
	    "same upstream host twice (%s)", m);

	m = load_error(UP_A
	    " \"prefix\": \"Hub\"}]}");
	ok(strstr(m, "upstreams[0].prefix: prefix \"Hub\" is not") != NULL,
	    "bad prefix (%s)", m);

	m = load_error(UP_A
	    " \"prefix\": \"hub\"}, {\"name\": \"b\", \"url\": \"http://b\","
	    " \"prefix\": \"hub/x\"}]}");
	ok(strstr(m, "upstreams[1].prefix: prefix \"hub/x\" overlaps")
	    != NULL, "nested prefix (%s)", m);

	m = load_error(UP_A
	    " \"prefix\": \"hub\"}, {\"name\": \"b\", \"url\": \"http://b\","
	    " \"prefix\": \"hubx\"}]}");
	is_str(m, "(loaded)", "prefix hubx does not overlap hub");

	m = load_error("{\"upstreams\": []}");
	ok(strstr(m, "upstreams: at least one") != NULL, "no upstreams (%s)",
	    m);

	m = load_error("{\n\"default_upstream\": \"nope\"}");
	is_str(m, ":2:1: default_upstream: no upstream is named \"nope\"",
	    "default_upstream naming nothing");

	m = load_error("[1]");
	ok(strstr(m, ":1:1: the top level must be an object") == m,
	    "top level array (%s)", m);

	m = load_error("{\"log\": {}, \"log\": {}}");
	ok(strstr(m, "duplicate") != NULL, "duplicate key (%s)", m);
}

/* The TTLs of upstreams and the "cache" section, as a file sets them. */
static void
test_cache_keys(void)
{
	struct config	*cf;
	char		 msg[1024], err[1024] = "";

	cf = load_text(
	    "{\n"
	    "  \"upstreams\": [\n"
	    "    {\"name\": \"a\", \"url\": \"http://a\",\n"
	    "     \"tag_ttl\": 60, \"negative_ttl\": 0},\n"
	    "    {\"name\": \"b\", \"url\": \"http://b\",\n"
	    "     \"tag_ttl\": 0, \"negative_ttl\": 2.5},\n"
	    "    {\"name\": \"c\", \"url\": \"http://c\"}\n"
	    "  ],\n"
	    "  \"cache\": {\"max_bytes\": \"20GiB\", \"high_water\": 90,\n"
	    "            \"low_water\": 70, \"max_idle\": \"7d\"}\n"
	    "}\n", msg, sizeof(msg));
	ok(cf != NULL, "cache keys load%s%s", cf ? "" : ": ", msg);
	if (cf == NULL)
		return;
	ok(cf->upstreams[0].tag_ttl_ms == 60000 &&
	    cf->upstreams[0].negative_ttl_ms == 0,
	    "tag_ttl 60 s, negative_ttl 0 (off)");
	ok(cf->upstreams[1].tag_ttl_ms == 0 &&
	    cf->upstreams[1].negative_ttl_ms == 2500,
	    "tag_ttl 0 (always revalidate), negative_ttl 2.5 s");
	ok(cf->upstreams[2].tag_ttl_ms == DEFAULT_TAG_TTL_MS &&
	    cf->upstreams[2].negative_ttl_ms == DEFAULT_NEGATIVE_TTL_MS,
	    "an upstream without TTLs gets the defaults");
	ok(cf->cache_max_bytes == 21474836480ULL, "cache.max_bytes 20GiB");
	ok(cf->cache_high_water == 90 && cf->cache_low_water == 70,
	    "cache water marks");
	ok(cf->cache_max_idle_s == 604800, "cache.max_idle 7d");
	ok(config_validate(cf, err, sizeof(err)) == 0,
	    "cache keys validate (%s)", err);
	cf->cache_low_water = cf->cache_high_water;
	ok(config_validate(cf, err, sizeof(err)) == -1 &&
	    strstr(err, "water") != NULL,
	    "validate refuses low_water == high_water (%s)", err);
	config_free(cf);

	cf = load_text("{\"cache\": {\"high_water\": 100, \"low_water\": 1}}",
	    msg, sizeof(msg));
	ok(cf != NULL && cf->cache_high_water == 100 &&
	    cf->cache_low_water == 1 && cf->cache_max_bytes == 0,
	    "water marks at their limits, no budget%s", msg);
	config_free(cf);

	cf = load_text("{\"cache\": {}}", msg, sizeof(msg));
	ok(cf != NULL && cf->cache_high_water == DEFAULT_CACHE_HIGH_WATER &&
	    cf->cache_low_water == DEFAULT_CACHE_LOW_WATER,
	    "empty cache section keeps the defaults%s", msg);
	config_free(cf);
}

/* Loads {"cache": {key: value}} and returns the number stored, or -1. */
static long long
cache_value(const char *key, const char *value)
{
	struct config	*cf;
	char		*text, msg[1024];
	long long	 n = -1;

	if (asprintf(&text, "{\"cache\": {\"%s\": %s}}", key, value) == -1)
		abort();
	if ((cf = load_text(text, msg, sizeof(msg))) != NULL) {
		n = strcmp(key, "max_bytes") == 0 ?
		    (long long)cf->cache_max_bytes :
		    (long long)cf->cache_max_idle_s;
		config_free(cf);
	} else
		diag("%s: %s", value, msg);
	free(text);
	return n;
}

/* Sizes and durations with their units. */
static void
test_units(void)
{
	static const struct {
		const char	*key;
		const char	*value;
		long long	 want;
	} cases[] = {
		{ "max_bytes", "\"20GiB\"", 21474836480LL },
		{ "max_bytes", "\"500MB\"", 500000000LL },
		{ "max_bytes", "\"1.5G\"", 1610612736LL },
		{ "max_bytes", "\"1.5T\"", 1649267441664LL },
		{ "max_bytes", "\"2TB\"", 2000000000000LL },
		{ "max_bytes", "\"1TiB\"", 1099511627776LL },
		{ "max_bytes", "\"2048K\"", 2097152LL },
		{ "max_bytes", "\"2048KiB\"", 2097152LL },
		{ "max_bytes", "\"2000KB\"", 2000000LL },
		{ "max_bytes", "\"10 MiB\"", 10485760LL },
		{ "max_bytes", "\"3m\"", 3145728LL },
		{ "max_bytes", "\"20gb\"", 20000000000LL },
		{ "max_bytes", "\"1048576B\"", 1048576LL },
		{ "max_bytes", "\"1048576\"", 1048576LL },
		{ "max_bytes", "1048576", 1048576LL },
		{ "max_bytes", "0", 0 },
		{ "max_bytes", "\"0GiB\"", 0 },
		{ "max_idle", "\"7d\"", 604800 },
		{ "max_idle", "\"1.5h\"", 5400 },
		{ "max_idle", "\"90m\"", 5400 },
		{ "max_idle", "\"45s\"", 45 },
		{ "max_idle", "\"45\"", 45 },
		{ "max_idle", "3600", 3600 },
		{ "max_idle", "2.5", 3 },
		{ "max_idle", "\"0.1s\"", 1 },
		{ "max_idle", "0", 0 },
	};
	size_t	 i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		ok(cache_value(cases[i].key, cases[i].value) == cases[i].want,
		    "%s %s = %lld", cases[i].key, cases[i].value,
		    cases[i].want);
}

/* Bad TTLs and cache settings, each with its line, column and key path. */
static void
test_cache_errors(void)
{
	const char	*m;

	m = load_error("{\"cache\": {\"max_bytes\": \"20GiG\"}}");
	is_str(m, ":1:12: cache.max_bytes: \"20GiG\": unknown unit \"GiG\" "
	    "(use B, K, KB, KiB, M, MB, MiB, G, GB, GiB, T, TB or TiB)",
	    "bad size unit");

	m = load_error("{\n  \"cache\": {\n    \"max_idle\": \"2w\"\n  }\n}\n");
	is_str(m, ":3:5: cache.max_idle: \"2w\": unknown unit \"w\" "
	    "(use s, m, h or d)", "bad duration unit");

	m = load_error("{\"cache\": {\"max_bytes\": \"lots\"}}");
	is_str(m, ":1:12: cache.max_bytes: \"lots\" is not a number followed "
	    "by a unit (B, K, KB, KiB, M, MB, MiB, G, GB, GiB, T, TB or TiB)",
	    "size without a number");

	m = load_error("{\"cache\": {\"max_bytes\": \"1.G\"}}");
	is_str(m, ":1:12: cache.max_bytes: \"1.G\": expected a digit after "
	    "the point", "size with a bare point");

	m = load_error("{\"cache\": {\"max_bytes\": \"1.1234567G\"}}");
	ok(strstr(m, ":1:12: cache.max_bytes: ") == m &&
	    strstr(m, "at most 6 digits") != NULL, "too many decimals (%s)",
	    m);

	m = load_error("{\"cache\": {\"max_bytes\": \"99999999999TiB\"}}");
	ok(strstr(m, ":1:12: cache.max_bytes: ") == m &&
	    strstr(m, "too large") != NULL, "size too large (%s)", m);

	m = load_error("{\"cache\": {\"max_bytes\": -1}}");
	is_str(m, ":1:12: cache.max_bytes: must not be negative (0 means no "
	    "budget)", "negative max_bytes");

	m = load_error("{\"cache\": {\"max_bytes\": \"-5GiB\"}}");
	is_str(m, ":1:12: cache.max_bytes: must not be negative (0 means no "
	    "budget)", "negative max_bytes as a string");

	m = load_error("{\"cache\": {\"max_bytes\": 1000}}");
	is_str(m, ":1:12: cache.max_bytes: must be 0 (no budget) or at least "
	    "1048576 bytes", "max_bytes below 1 MiB");

	m = load_error("{\"cache\": {\"max_bytes\": \"512K\"}}");
	is_str(m, ":1:12: cache.max_bytes: must be 0 (no budget) or at least "
	    "1048576 bytes", "max_bytes 512K below 1 MiB");

	m = load_error("{\"cache\": {\"max_bytes\": 2.5e9}}");
	is_str(m, ":1:12: cache.max_bytes: expected an integer number of "
	    "bytes or a string such as \"20GiB\", got a real number",
	    "max_bytes as a real number");

	m = load_error("{\"cache\": {\"max_idle\": -1}}");
	is_str(m, ":1:12: cache.max_idle: must not be negative (0 means no "
	    "idle limit)", "negative max_idle");

	m = load_error("{\"cache\": {\"max_idle\": -0.5}}");
	is_str(m, ":1:12: cache.max_idle: must not be negative (0 means no "
	    "idle limit)", "negative real max_idle");

	m = load_error("{\"cache\": {\"max_idle\": true}}");
	is_str(m, ":1:12: cache.max_idle: expected a number of seconds or a "
	    "string such as \"7d\", got a boolean", "max_idle a boolean");

	m = load_error("{\"cache\": {\"max_idle\": \"40000d\"}}");
	ok(strstr(m, ":1:12: cache.max_idle: must be at most ") == m,
	    "max_idle too long (%s)", m);

	m = load_error(
	    "{\n"
	    "  \"cache\": {\n"
	    "    \"high_water\": 80,\n"
	    "    \"low_water\": 80\n"
	    "  }\n"
	    "}\n");
	is_str(m, ":4:5: cache.low_water: 80 must be below high_water (80)",
	    "low_water equal to high_water");

	m = load_error("{\"cache\": {\"high_water\": 50, \"low_water\": 60}}");
	is_str(m, ":1:30: cache.low_water: 60 must be below high_water (50)",
	    "low_water above high_water");

	m = load_error("{\"cache\": {\"high_water\": 80}}");
	is_str(m, ":1:12: cache.high_water: 80 must be above low_water (85, "
	    "its default)", "high_water below the default low_water");

	m = load_error("{\"cache\": {\"high_water\": 101}}");
	is_str(m, ":1:12: cache.high_water: must be an integer from 1 to 100",
	    "high_water above 100");

	m = load_error("{\"cache\": {\"low_water\": 0}}");
	is_str(m, ":1:12: cache.low_water: must be an integer from 1 to 100",
	    "low_water 0");

	m = load_error("{\"cache\": {\"low_water\": \"80%\"}}");
	is_str(m, ":1:12: cache.low_water: expected an integer, got a string",
	    "low_water a string");

	m = load_error("{\"cache\": {\"max_size\": 1}}");
	is_str(m, ":1:12: cache.max_size: unknown key", "unknown cache key");

	m = load_error("{\"cache\": 10}");
	is_str(m, ":1:2: cache: expected an object, got an integer",
	    "cache must be an object");

	m = load_error(
	    "{\"upstreams\": [\n"
	    "  {\"name\": \"a\", \"url\": \"http://a\",\n"
	    "   \"tag_ttl\": \"5m\"}]}\n");
	is_str(m, ":3:4: upstreams[0].tag_ttl: expected a number of seconds, "
	    "got a string", "tag_ttl a string");

	m = load_error(
	    "{\"upstreams\": [\n"
	    "  {\"name\": \"a\", \"url\": \"http://a\"},\n"
	    "  {\"name\": \"b\", \"url\": \"http://b\", \"tag_ttl\": -1}]}\n");
	is_str(m, ":3:36: upstreams[1].tag_ttl: must not be negative (0 means "
	    "always revalidate)", "negative tag_ttl");

	m = load_error(
	    "{\"upstreams\": [\n"
	    "  {\"name\": \"a\", \"url\": \"http://a\",\n"
	    "   \"negative_ttl\": -0.5}]}\n");
	is_str(m, ":3:4: upstreams[0].negative_ttl: must not be negative "
	    "(0 means no negative caching)", "negative negative_ttl");

	m = load_error(UP_A " \"tag_ttl\": 0.0001}]}");
	ok(strstr(m, "upstreams[0].tag_ttl: must be 0 or at least 0.001 "
	    "seconds") != NULL, "tag_ttl below a millisecond (%s)", m);

	m = load_error(UP_A " \"tag_ttl\": 9999999}]}");
	ok(strstr(m, "upstreams[0].tag_ttl: must be at most 2147483 seconds")
	    != NULL, "tag_ttl too long (%s)", m);

	m = load_error(UP_A " \"tag_tll\": 60}]}");
	ok(strstr(m, "upstreams[0].tag_tll: unknown key") != NULL,
	    "misspelt tag_ttl (%s)", m);
}

/* default_upstream absent, null; an empty file. */
static void
test_default_upstream(void)
{
	struct config	*cf;
	char		 msg[1024];

	cf = load_text("{\"default_upstream\": null}", msg, sizeof(msg));
	ok(cf != NULL && cf->default_upstream == -1, "null default: none");
	config_free(cf);
	cf = load_text(UP_A " \"prefix\": null}, {\"name\": \"b\", "
	    "\"url\": \"http://b\"}]}", msg, sizeof(msg));
	ok(cf != NULL && cf->default_upstream == 0,
	    "absent default: the first");
	config_free(cf);
	cf = load_text("{}", msg, sizeof(msg));
	ok(cf != NULL && cf->nupstreams == 1 &&
	    strcmp(cf->upstreams[0].name, "docker.io") == 0 &&
	    strcmp(cf->listens[0].address, DEFAULT_LISTEN) == 0,
	    "empty object: defaults");
	config_free(cf);
}

/* Flags and environment over the defaults, and what they refuse. */
static void
test_overrides(void)
{
	struct config_overrides	 ov;
	struct config		*cf = config_default();
	struct upstream_cfg	*u;
	char			 err[256] = "";

	memset(&ov, 0, sizeof(ov));
	ov.listen = "[::]:6000";
	ov.data_dir = "/srv/cache";
	ov.upstream_url = "https://registry-1.docker.io/";
	ov.log_level = "warn";
	ok(config_apply_overrides(cf, &ov, err, sizeof(err)) == 0,
	    "overrides apply");
	ok(cf->nlistens == 1 && strcmp(cf->listens[0].host, "::") == 0 &&
	    strcmp(cf->listens[0].port, "6000") == 0, "override: listen");
	is_str(cf->data_dir, "/srv/cache", "override: data_dir");
	u = &cf->upstreams[0];
	ok(cf->nupstreams == 1 && strcmp(u->name, "registry-1.docker.io") == 0
	    && u->naliases == 3 && strcmp(u->aliases[0],
	    "registry-1.docker.io") == 0 && u->library_prefix &&
	    cf->default_upstream == 0, "override: docker hub upstream");
	ok(u->tag_ttl_ms == DEFAULT_TAG_TTL_MS &&
	    u->negative_ttl_ms == DEFAULT_NEGATIVE_TTL_MS && u->tls_verify,
	    "override: upstream gets the default TTLs");
	ok(cf->log_level == LOG_LEVEL_WARN, "override: log level");

	memset(&ov, 0, sizeof(ov));
	ov.upstream_url = "http://[fd00::1]:5000/base";
	ok(config_apply_overrides(cf, &ov, err, sizeof(err)) == 0 &&
	    strcmp(cf->upstreams[0].name, "fd00--1") == 0 &&
	    strcmp(cf->upstreams[0].aliases[0], "[fd00::1]:5000") == 0 &&
	    cf->upstreams[0].naliases == 1 &&
	    !cf->upstreams[0].library_prefix,
	    "override: IPv6 upstream named after its host");

	memset(&ov, 0, sizeof(ov));
	ov.listen = "localhost";
	ov.data_dir = "/elsewhere";
	ok(config_apply_overrides(cf, &ov, err, sizeof(err)) == -1 &&
	    strncmp(err, "listen address \"localhost\": ", 28) == 0,
	    "bad listen override (%s)", err);
	is_str(cf->data_dir, "/srv/cache", "failed override changes nothing");

	memset(&ov, 0, sizeof(ov));
	ov.upstream_url = "https://me:pw0rd@example.com";
	ok(config_apply_overrides(cf, &ov, err, sizeof(err)) == -1 &&
	    strstr(err, "pw0rd") == NULL, "bad upstream override (%s)", err);
	ov.upstream_url = NULL;
	ov.log_level = "loud";
	ok(config_apply_overrides(cf, &ov, err, sizeof(err)) == -1 &&
	    strstr(err, "loud") != NULL, "bad log level override (%s)", err);
	config_free(cf);
}

/* "admin": its default, an address, null, the errors, the override. */
static void
test_admin(void)
{
	struct config_overrides	 ov;
	struct config		*cf;
	const char		*m, *want;
	char			 msg[1024], err[256];

	cf = config_default();
	ok(cf->admin != NULL && strcmp(cf->admin->address,
	    DEFAULT_ADMIN_LISTEN) == 0 && strcmp(cf->admin->port, "5001") == 0,
	    "admin listens on " DEFAULT_ADMIN_LISTEN " by default");
	config_free(cf);

	cf = load_text("{\"admin\": {\"listen\": \"[::1]:9100\"}}", msg,
	    sizeof(msg));
	ok(cf != NULL && cf->admin != NULL && strcmp(cf->admin->host,
	    "::1") == 0 && strcmp(cf->admin->port, "9100") == 0,
	    "admin.listen takes an address like listen's (%s)", msg);
	config_free(cf);

	cf = load_text("{\"admin\": null}", msg, sizeof(msg));
	ok(cf != NULL && cf->admin == NULL, "\"admin\": null turns it off");
	config_free(cf);

	m = load_error("{\"admin\": {\"listen\": \"localhost\"}}");
	want = ":1:12: admin.listen: listen address \"localhost\": ";
	ok(strncmp(m, want, strlen(want)) == 0,
	    "admin.listen needs a port (%s)", m);
	m = load_error("{\"admin\": {}}");
	is_str(m, ":1:2: admin: missing key \"listen\"",
	    "admin without listen");
	m = load_error("{\"admin\": {\"listen\": \":1\", \"tls\": null}}");
	is_str(m, ":1:28: admin.tls: unknown key", "admin has no tls");
	m = load_error("{\"admin\": \"127.0.0.1:5001\"}");
	is_str(m, ":1:2: admin: expected an object or null, got a string",
	    "admin is an object");

	cf = load_text("{\"listen\": [\"127.0.0.1:5001\"]}", msg,
	    sizeof(msg));
	ok(cf != NULL && config_validate(cf, err, sizeof(err)) == -1 &&
	    strstr(err, "admin.listen \"127.0.0.1:5001\" is also a listen "
	    "address") != NULL, "the admin address is not a client one (%s)",
	    err);
	config_free(cf);

	cf = config_default();
	memset(&ov, 0, sizeof(ov));
	ov.admin = "127.0.0.1:7001";
	ok(config_apply_overrides(cf, &ov, err, sizeof(err)) == 0 &&
	    cf->admin != NULL && strcmp(cf->admin->port, "7001") == 0,
	    "override: admin address");
	ov.admin = "none";
	ok(config_apply_overrides(cf, &ov, err, sizeof(err)) == 0 &&
	    cf->admin == NULL, "override: admin none");
	ov.admin = "nowhere";
	want = "admin address \"nowhere\": ";
	ok(config_apply_overrides(cf, &ov, err, sizeof(err)) == -1 &&
	    strncmp(err, want, strlen(want)) == 0 &&
	    cf->admin == NULL, "bad admin override changes nothing (%s)", err);
	config_free(cf);
}

/* Parses one URL into a zeroed upstream; returns 0 or -1. */
static int
parse_url(const char *url, struct upstream_cfg *u, char *err, size_t len)
{
	memset(u, 0, sizeof(*u));
	err[0] = '\0';
	return config_parse_url(url, u, err, len);
}

/* Frees what config_parse_url() filled. */
static void
url_done(struct upstream_cfg *u)
{
	free(u->host);
	free(u->port);
	free(u->hostport);
	free(u->base_path);
	memset(u, 0, sizeof(*u));
}

/* The URL parser on its own. */
static void
test_parse_url(void)
{
	struct upstream_cfg	 u;
	char			 err[256];

	ok(parse_url("https://[2001:DB8::1]:5443/a/b/", &u, err,
	    sizeof(err)) == 0 && u.tls && strcmp(u.host, "2001:db8::1") == 0 &&
	    strcmp(u.port, "5443") == 0 &&
	    strcmp(u.hostport, "[2001:db8::1]:5443") == 0 &&
	    strcmp(u.base_path, "/a/b") == 0, "url: IPv6 with port and path");
	url_done(&u);
	ok(parse_url("http://Example.COM", &u, err, sizeof(err)) == 0 &&
	    !u.tls && strcmp(u.port, "80") == 0 &&
	    strcmp(u.hostport, "example.com") == 0 &&
	    strcmp(u.base_path, "") == 0, "url: http default port 80");
	url_done(&u);
	ok(parse_url("HTTPS://example.com/", &u, err, sizeof(err)) == 0 &&
	    u.tls && strcmp(u.port, "443") == 0 && u.base_path[0] == '\0',
	    "url: https default port 443, '/' is no base path");
	url_done(&u);
	ok(parse_url("https://u:p@example.com", &u, err, sizeof(err)) == -1 &&
	    strstr(err, "user information") != NULL, "url: userinfo refused");
	ok(parse_url("https://example.com/x?y=1", &u, err, sizeof(err)) == -1 &&
	    strstr(err, "query") != NULL, "url: query refused");
	ok(parse_url("https://example.com#f", &u, err, sizeof(err)) == -1,
	    "url: fragment refused");
	ok(parse_url("example.com", &u, err, sizeof(err)) == -1 &&
	    strstr(err, "scheme") != NULL, "url: scheme required");
	ok(parse_url("https://example.com:0", &u, err, sizeof(err)) == -1,
	    "url: port 0 refused");
	ok(parse_url("https://::1/", &u, err, sizeof(err)) == -1 &&
	    strstr(err, "brackets") != NULL, "url: bare IPv6 refused");
	ok(parse_url("https:///x", &u, err, sizeof(err)) == -1,
	    "url: empty host refused");
}

/* The sample shipped in etc/ must load and validate as it is. */
static void
test_sample(void)
{
	struct config	*cf;
	const char	*top = getenv("TOP_SRCDIR");
	char		 path[1024], err[1024] = "";

	snprintf(path, sizeof(path), "%s/etc/regcache.json",
	    top != NULL ? top : ".");
	cf = config_load(path, err, sizeof(err));
	ok(cf != NULL, "sample %s loads%s%s", path, cf ? "" : ": ",
	    cf ? "" : err);
	if (cf == NULL)
		return;
	ok(config_validate(cf, err, sizeof(err)) == 0,
	    "sample validates (%s)", err);
	config_free(cf);
}

/* Runs every group; TMPDIR (default /tmp) holds the temporary files. */
/* Loads text that must load, then validates it; the message if not. */
static struct config *
load_valid(const char *text, char *err, size_t len)
{
	struct config	*cf;
	char		 msg[900];

	err[0] = '\0';
	if ((cf = load_text(text, msg, sizeof(msg))) == NULL) {
		snprintf(err, len, "load: %.900s", msg);
		return NULL;
	}
	if (config_validate(cf, err, len) == -1) {
		config_free(cf);
		return NULL;
	}
	return cf;
}

/* Where an upstream's credentials come from, and how ECR is filled in. */
static void
test_credentials(void)
{
	struct config	*cf;
	char		 err[1024], text[2048], *pw, *dc;
	const char	*m;

	setenv("T_CONFIG_USER", "envuser", 1);
	setenv("T_CONFIG_PASS", "envpass", 1);
	cf = load_valid(UP_A " \"auth\": {\"username_env\": \"T_CONFIG_USER\","
	    " \"password_env\": \"T_CONFIG_PASS\"}}]}", err, sizeof(err));
	ok(cf != NULL && cf->upstreams[0].cred_kind == CRED_STATIC &&
	    strcmp(cf->upstreams[0].username, "envuser") == 0 &&
	    strcmp(cf->upstreams[0].password, "envpass") == 0,
	    "credentials from the environment (%s)", err);
	config_free(cf);

	unsetenv("T_CONFIG_PASS");
	cf = load_valid(UP_A " \"auth\": {\"username\": \"u\","
	    " \"password_env\": \"T_CONFIG_PASS\"}}]}", err, sizeof(err));
	ok(cf == NULL && strstr(err, "T_CONFIG_PASS is not set") != NULL,
	    "unset password variable named (%s)", err);

	pw = write_temp("filepass\n");
	snprintf(text, sizeof(text), UP_A " \"auth\": {\"username\": \"u\","
	    " \"password_file\": \"%s\"}}]}", pw);
	cf = load_valid(text, err, sizeof(err));
	ok(cf != NULL && strcmp(cf->upstreams[0].password, "filepass") == 0,
	    "password file, newline dropped (%s)", err);
	config_free(cf);
	unlink(pw);
	cf = load_valid(text, err, sizeof(err));
	ok(cf == NULL && strstr(err, "password_file") != NULL &&
	    strstr(err, "No such file") != NULL, "missing password file (%s)",
	    err);
	free(pw);

	/* "dXNlcjpwYXNz" is base64 of "user:pass". */
	dc = write_temp("{\"auths\": {\"https://index.docker.io/v1/\": "
	    "{\"auth\": \"dXNlcjpwYXNz\"}, \"a\": {\"username\": \"ua\", "
	    "\"password\": \"pa\"}}}");
	snprintf(text, sizeof(text), "{\"upstreams\": [{\"name\": \"hub\", "
	    "\"url\": \"https://registry-1.docker.io\", \"auth\": "
	    "{\"docker_config\": \"%s\"}}, {\"name\": \"a\", \"url\": "
	    "\"http://a\", \"auth\": {\"docker_config\": \"%s\"}}]}", dc, dc);
	cf = load_valid(text, err, sizeof(err));
	ok(cf != NULL && strcmp(cf->upstreams[0].username, "user") == 0 &&
	    strcmp(cf->upstreams[0].password, "pass") == 0 &&
	    strcmp(cf->upstreams[1].username, "ua") == 0 &&
	    strcmp(cf->upstreams[1].password, "pa") == 0,
	    "docker config.json: Hub key and a host key (%s)", err);
	config_free(cf);
	snprintf(text, sizeof(text), "{\"upstreams\": [{\"name\": \"b\", "
	    "\"url\": \"http://b\", \"auth\": {\"docker_config\": \"%s\"}}]}",
	    dc);
	cf = load_valid(text, err, sizeof(err));
	ok(cf == NULL && strstr(err, "no \"auths\" entry for b") != NULL,
	    "docker config.json without the host (%s)", err);
	unlink(dc);
	free(dc);

	unsetenv("AWS_REGION");
	unsetenv("AWS_DEFAULT_REGION");
	unsetenv("AWS_ENDPOINT_URL_ECR");
	unsetenv("AWS_ENDPOINT_URL_STS");
	unsetenv("AWS_EC2_METADATA_SERVICE_ENDPOINT");
	cf = load_valid("{\"upstreams\": [{\"name\": \"ecr\", \"url\": "
	    "\"https://123456789012.dkr.ecr.eu-west-3.amazonaws.com\", "
	    "\"auth\": {\"ecr\": {}}}]}", err, sizeof(err));
	ok(cf != NULL && cf->upstreams[0].cred_kind == CRED_ECR &&
	    strcmp(cf->upstreams[0].ecr.region, "eu-west-3") == 0 &&
	    strcmp(cf->upstreams[0].ecr.endpoint,
	    "https://api.ecr.eu-west-3.amazonaws.com/") == 0 &&
	    strcmp(cf->upstreams[0].ecr.sts_endpoint,
	    "https://sts.eu-west-3.amazonaws.com/") == 0 &&
	    strcmp(cf->upstreams[0].ecr.imds_endpoint,
	    "http://169.254.169.254") == 0 &&
	    cf->upstreams[0].ecr.refresh_before_ms == 3600 * 1000,
	    "ecr: region and endpoints from the host (%s)", err);
	config_free(cf);
	cf = load_valid(UP_A " \"auth\": {\"ecr\": {\"endpoint\": "
	    "\"http://127.0.0.1:9/\", \"refresh_before\": 2}}}]}", err,
	    sizeof(err));
	ok(cf == NULL && strstr(err, "set auth.ecr.region") != NULL,
	    "ecr: a host without a region needs one (%s)", err);
	cf = load_valid(UP_A " \"auth\": {\"ecr\": {\"region\": \"us-east-1\","
	    " \"endpoint\": \"http://127.0.0.1:9/\", \"refresh_before\": 2}}}]}",
	    err, sizeof(err));
	ok(cf != NULL && strcmp(cf->upstreams[0].ecr.endpoint,
	    "http://127.0.0.1:9/") == 0 &&
	    cf->upstreams[0].ecr.refresh_before_ms == 2000,
	    "ecr: explicit region, endpoint, refresh_before (%s)", err);
	config_free(cf);
	cf = load_valid(UP_A " \"auth\": {\"ecr\": {\"region\": \"us-east-1\","
	    " \"endpoint\": \"ftp://x/\"}}}]}", err, sizeof(err));
	ok(cf == NULL && strstr(err, "endpoint is not an http or https URL") !=
	    NULL, "ecr: bad endpoint (%s)", err);

	m = load_error(UP_A " \"auth\": {\"username\": \"u\", \"password\": "
	    "\"p\", \"passthrough\": true}}]}");
	ok(strstr(m, "give one kind of credentials") != NULL,
	    "one kind of credentials only (%s)", m);
	m = load_error(UP_A " \"auth\": {\"ecr\": {\"bogus\": 1}}}]}");
	ok(strstr(m, "upstreams[0].auth.ecr.bogus") != NULL,
	    "ecr: unknown key (%s)", m);
	cf = load_valid(UP_A " \"auth\": {\"passthrough\": true}}]}", err,
	    sizeof(err));
	ok(cf != NULL && cf->upstreams[0].cred_kind == CRED_PASSTHROUGH,
	    "passthrough (%s)", err);
	config_free(cf);
}

/* One upstream "a" and the start of an "auth" section after it. */
#define UP_AUTH	UP_A " \"prefix\": \"p\"}],"

/* The "auth" section: a full one, its errors, and the htpasswd check. */
static void
test_auth(void)
{
	struct config		*cf;
	struct access_cfg	*ac;
	char			*good, *apr1, *text, msg[1024], err[1024] = "";
	const char		*m;

	good = write_temp("alice:$2y$05$CEVNaO2wz.1V79NTztQ73eBaU1g9qLIiDazL"
	    "ybhalRLsRoPG2R2.C\n");
	apr1 = write_temp("alice:$apr1$KHE00tVI$GpfEm9vG3ZopmLx/tYd4M1\n");
	if (asprintf(&text,
	    UP_A " \"prefix\": \"a\"},\n"
	    "  {\"name\": \"b\", \"url\": \"http://b\"}],\n"
	    " \"auth\": {\"htpasswd\": \"%s\", \"token_ttl\": \"5m\",\n"
	    "  \"groups\": {\"devs\": [\"alice\", \"bob\"]},\n"
	    "  \"rules\": [\n"
	    "   {\"users\": [\"alice\"], \"groups\": [\"devs\"],\n"
	    "    \"anonymous\": true, \"upstreams\": [\"a\"],\n"
	    "    \"repositories\": [\"library/*\", \"team/**\"], "
	    "\"allow\": true},\n"
	    "   {\"users\": [\"*\"], \"allow\": false}]}}\n", good) == -1)
		abort();
	cf = load_text(text, msg, sizeof(msg));
	ok(cf != NULL && cf->access != NULL, "auth section loads (%s)", msg);
	if (cf != NULL && (ac = cf->access) != NULL) {
		is_str(ac->htpasswd, good, "auth.htpasswd");
		ok(ac->token_ttl_s == 300, "token_ttl \"5m\" is 300 s");
		ok(ac->ngroups == 1 && ac->groups[0].nusers == 2 &&
		    strcmp(ac->groups[0].users[1], "bob") == 0, "groups");
		ok(ac->nrules == 2 && ac->rules[0].anonymous &&
		    ac->rules[0].allow && ac->rules[0].nupstreams == 1 &&
		    ac->rules[0].nrepos == 2 && !ac->rules[1].allow &&
		    ac->rules[1].upstreams == NULL &&
		    ac->rules[1].repos == NULL, "rules");
		ok(ac->users == NULL, "no users before validation");
		ok(config_validate(cf, err, sizeof(err)) == 0 &&
		    ac->nusers == 1 && strcmp(ac->users[0].name, "alice") == 0,
		    "validation loads the htpasswd file (%s)", err);
	}
	config_free(cf);
	free(text);

	if (asprintf(&text, UP_AUTH " \"auth\": {\"htpasswd\": \"%s\",\n"
	    " \"rules\": [{\"anonymous\": true, \"allow\": true}]}}", apr1) == -1)
		abort();
	cf = load_text(text, msg, sizeof(msg));
	ok(cf != NULL && cf->access->token_ttl_s == DEFAULT_TOKEN_TTL_S,
	    "token_ttl defaults to %d s", DEFAULT_TOKEN_TTL_S);
	err[0] = '\0';
	ok(cf != NULL && config_validate(cf, err, sizeof(err)) == -1 &&
	    strstr(err, "auth.htpasswd") != NULL && strstr(err, "line 1") &&
	    strstr(err, "MD5") != NULL && strstr(err, "KHE00") == NULL,
	    "an MD5 htpasswd entry fails validation (%s)", err);
	config_free(cf);
	free(text);

	cf = load_text(UP_AUTH " \"auth\": null}", msg, sizeof(msg));
	ok(cf != NULL && cf->access == NULL, "\"auth\": null means open "
	    "pulls (%s)", msg);
	config_free(cf);
	m = load_error(UP_AUTH " \"auth\": true}");
	is_str(m, ":1:66: auth: expected an object or null, got a boolean",
	    "auth must be an object");
	m = load_error(UP_AUTH " \"auth\": {\"rules\": []}}");
	is_str(m, ":1:66: auth: missing key \"htpasswd\"", "htpasswd required");
	m = load_error(UP_AUTH " \"auth\": {\"htpasswd\": \"h\"}}");
	is_str(m, ":1:66: auth: missing key \"rules\"", "rules required");
	m = load_error(UP_AUTH " \"auth\": {\"htpasswd\": \"h\", "
	    "\"rules\": []}}");
	is_str(m, ":1:92: auth.rules: at least one rule is required",
	    "at least one rule");
	m = load_error(UP_AUTH " \"auth\": {\"htpasswd\": \"h\", \"realm\": 1, "
	    "\"rules\": []}}");
	is_str(m, ":1:92: auth.realm: unknown key", "unknown key in auth");
	m = load_error(UP_AUTH " \"auth\": {\"htpasswd\": \"h\", "
	    "\"rules\": [{\"users\": [\"a\"], \"allow\": true, \"deny\": 1}]}}");
	is_str(m, ":1:134: auth.rules[0].deny: unknown key",
	    "unknown key in a rule");
	m = load_error(UP_AUTH " \"auth\": {\"htpasswd\": \"h\", "
	    "\"rules\": [{\"users\": [\"a\"]}]}}");
	is_str(m, ":1:102: auth.rules[0]: missing key \"allow\"",
	    "allow required");
	m = load_error(UP_AUTH " \"auth\": {\"htpasswd\": \"h\", "
	    "\"rules\": [{\"allow\": true}]}}");
	ok(strstr(m, "auth.rules[0]: a rule must name") != NULL,
	    "a rule must say whom it is for (%s)", m);
	m = load_error(UP_AUTH " \"auth\": {\"htpasswd\": \"h\", "
	    "\"rules\": [{\"groups\": [\"ops\"], \"allow\": true}]}}");
	ok(strstr(m, "auth.rules[0].groups[0]: no group is named \"ops\"") !=
	    NULL, "an unknown group (%s)", m);
	m = load_error(UP_AUTH " \"auth\": {\"htpasswd\": \"h\", "
	    "\"rules\": [{\"users\": [\"a\"], \"upstreams\": [\"a\", \"zz\"], "
	    "\"allow\": true}]}}");
	ok(strstr(m, "auth.rules[0].upstreams[1]: no upstream is named "
	    "\"zz\"") != NULL, "an unknown upstream (%s)", m);
	m = load_error(UP_AUTH " \"auth\": {\"htpasswd\": \"h\", "
	    "\"rules\": [{\"users\": [\"a\"], \"repositories\": [\"Team/*\"], "
	    "\"allow\": true}]}}");
	ok(strstr(m, "auth.rules[0].repositories[0]: \"Team/*\" must be a "
	    "repository pattern") != NULL, "a bad pattern (%s)", m);
	m = load_error(UP_AUTH " \"auth\": {\"htpasswd\": \"h\", "
	    "\"rules\": [{\"users\": [\"a b\"], \"allow\": true}]}}");
	ok(strstr(m, "auth.rules[0].users[0]: \"a b\" must be a user name") !=
	    NULL, "a bad user name (%s)", m);
	m = load_error(UP_AUTH " \"auth\": {\"htpasswd\": \"h\", "
	    "\"rules\": [{\"users\": [\"a\", \"a\"], \"allow\": true}]}}");
	ok(strstr(m, "auth.rules[0].users[1]: \"a\" is listed twice") != NULL,
	    "a repeated user (%s)", m);
	m = load_error(UP_AUTH " \"auth\": {\"htpasswd\": \"h\", "
	    "\"token_ttl\": \"2d\", \"rules\": []}}");
	ok(strstr(m, "auth.token_ttl: must be at most 86400 seconds") != NULL,
	    "token_ttl at most a day (%s)", m);
	m = load_error(UP_AUTH " \"auth\": {\"htpasswd\": \"h\", "
	    "\"groups\": {\"a b\": [\"x\"]}, \"rules\": []}}");
	ok(strstr(m, "auth.groups.a b: a group name must be") != NULL,
	    "a bad group name (%s)", m);

	/* After -u replaced the upstreams, a rule's upstream is gone. */
	if (asprintf(&text, UP_AUTH " \"auth\": {\"htpasswd\": \"%s\",\n"
	    " \"rules\": [{\"users\": [\"alice\"], \"upstreams\": [\"a\"], "
	    "\"allow\": true}]}}", good) == -1)
		abort();
	cf = load_text(text, msg, sizeof(msg));
	if (cf != NULL) {
		struct config_overrides ov;

		memset(&ov, 0, sizeof(ov));
		ov.upstream_url = "http://other.example";
		ok(config_apply_overrides(cf, &ov, err, sizeof(err)) == 0 &&
		    config_validate(cf, err, sizeof(err)) == -1 &&
		    strstr(err, "auth.rules[0]: no upstream is named \"a\"") !=
		    NULL, "an override that drops a rule's upstream fails "
		    "validation (%s)", err);
		config_free(cf);
	} else
		ok(0, "load for the override case: %s", msg);
	free(text);
	unlink(good);
	unlink(apr1);
	free(good);
	free(apr1);
}

/* "log": {"access": {"format", "file"}}. */
static void
test_log_access(void)
{
	struct config	*cf;
	const char	*m;
	char		 msg[1024];

	cf = load_text("{\"log\": {\"level\": \"warn\", \"access\": "
	    "{\"format\": \"json\", \"file\": \"/var/log/regcache/access.log\"}}}",
	    msg, sizeof(msg));
	ok(cf != NULL && cf->access_format == ACCESS_FORMAT_JSON &&
	    cf->access_file != NULL &&
	    strcmp(cf->access_file, "/var/log/regcache/access.log") == 0 &&
	    cf->log_level == LOG_LEVEL_WARN, "log.access: json to a file%s",
	    msg);
	config_free(cf);
	cf = load_text("{\"log\": {\"access\": {\"format\": \"combined\", "
	    "\"file\": null}}}", msg, sizeof(msg));
	ok(cf != NULL && cf->access_format == ACCESS_FORMAT_COMBINED &&
	    cf->access_file == NULL, "log.access: file null is stderr%s", msg);
	config_free(cf);
	cf = load_text("{\"log\": {\"access\": null}}", msg, sizeof(msg));
	ok(cf != NULL && cf->access_format == ACCESS_FORMAT_COMBINED &&
	    cf->access_file == NULL, "log.access: null keeps the defaults%s",
	    msg);
	config_free(cf);
	cf = load_text("{\"log\": {\"access\": {}}}", msg, sizeof(msg));
	ok(cf != NULL && cf->access_file == NULL,
	    "log.access: an empty object keeps the defaults%s", msg);
	config_free(cf);

	m = load_error("{\"log\": {\"access\": {\"format\": \"xml\"}}}");
	is_str(m, ":1:21: log.access.format: format \"xml\" must be combined "
	    "or json", "log.access: unknown format");
	m = load_error("{\"log\": {\"access\": {\"path\": \"/x\"}}}");
	is_str(m, ":1:21: log.access.path: unknown key",
	    "log.access: unknown key");
	m = load_error("{\"log\": {\"access\": {\"file\": \"\"}}}");
	is_str(m, ":1:21: log.access.file: must not be empty",
	    "log.access: empty file name");
	m = load_error("{\"log\": {\"access\": {\"file\": 1}}}");
	is_str(m, ":1:21: log.access.file: expected a string, got an integer",
	    "log.access: file must be a string");
	m = load_error("{\"log\": {\"access\": \"json\"}}");
	is_str(m, ":1:10: log.access: expected an object, got a string",
	    "log.access: must be an object");
}

int
main(void)
{
	const char	*t = getenv("TMPDIR");

	snprintf(tmpdir, sizeof(tmpdir), "%s",
	    t != NULL && *t != '\0' ? t : "/tmp");
	test_defaults();
	test_full_file();
	test_errors();
	test_cache_keys();
	test_units();
	test_cache_errors();
	test_default_upstream();
	test_overrides();
	test_admin();
	test_parse_url();
	test_sample();
	test_credentials();
	test_auth();
	test_log_access();
	return tap_done();
}

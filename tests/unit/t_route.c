/*
 * Unit tests of src/route.c: containerd's ns= against host names and
 * aliases, path prefixes, the default upstream and library/ names.  The
 * upstreams are built by hand, without a configuration file.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "regcache.h"
#include "tap.h"

/* The library refers to these; main.c defines them in the daemon. */
struct event_base	*ev_base;
struct evdns_base	*dns_base;
struct config		*conf;

enum { UP_HUB, UP_GHCR, UP_LOCAL, NUPS };

static char	 hub_alias1[] = "docker.io";
static char	 hub_alias2[] = "index.docker.io";
static char	*hub_aliases[] = { hub_alias1, hub_alias2 };
static char	 hub_name[] = "docker.io";
static char	 hub_hostport[] = "registry-1.docker.io";
static char	 ghcr_name[] = "ghcr";
static char	 ghcr_hostport[] = "ghcr.io";
static char	 ghcr_prefix[] = "ghcr";
static char	 local_name[] = "local";
static char	 local_hostport[] = "127.0.0.1:5001";
static char	 local_prefix[] = "my/reg";

static struct upstream_cfg	cfgs[NUPS];
static struct upstream		ups[NUPS];
static struct upstream		*upp[NUPS];

static void
setup(void)
{
	size_t	i;

	memset(cfgs, 0, sizeof(cfgs));
	memset(ups, 0, sizeof(ups));
	cfgs[UP_HUB].name = hub_name;
	cfgs[UP_HUB].hostport = hub_hostport;
	cfgs[UP_HUB].aliases = hub_aliases;
	cfgs[UP_HUB].naliases = 2;
	cfgs[UP_HUB].library_prefix = 1;
	cfgs[UP_GHCR].name = ghcr_name;
	cfgs[UP_GHCR].hostport = ghcr_hostport;
	cfgs[UP_GHCR].prefix = ghcr_prefix;
	cfgs[UP_LOCAL].name = local_name;
	cfgs[UP_LOCAL].hostport = local_hostport;
	cfgs[UP_LOCAL].prefix = local_prefix;
	for (i = 0; i < NUPS; i++) {
		ups[i].cfg = &cfgs[i];
		upp[i] = &ups[i];
		TAILQ_INIT(&ups[i].tokens);
	}
}

/* Resolves (ns, name) with default dflt; expects upstream idx and want. */
static void
check_ok(int dflt, const char *ns, const char *name, int idx,
    const char *want)
{
	struct route	 r;
	const char	*code = NULL, *msg = NULL;
	int		 rc, good;

	rc = route_resolve(upp, NUPS, dflt, ns, name, &r, &code, &msg);
	good = rc == 0 && r.upstream == &ups[idx] && r.upstream_index == idx &&
	    strcmp(r.name, want) == 0 &&
	    ((ns == NULL && r.ns == NULL) ||
	    (ns != NULL && r.ns != NULL && strcmp(r.ns, ns) == 0));
	ok(good, "route ns=%s name=%s default=%d -> %s %s",
	    ns ? ns : "(none)", name, dflt, cfgs[idx].name, want);
	if (!good)
		diag("got rc %d index %d name \"%s\" ns %s code %s", rc,
		    r.upstream_index, r.name, r.ns ? r.ns : "(null)",
		    code ? code : "(null)");
}

/* Resolves (ns, name) and expects an error status and code. */
static void
check_err(int dflt, const char *ns, const char *name, int status,
    const char *want_code)
{
	struct route	 r;
	const char	*code = NULL, *msg = NULL;
	int		 rc, good;

	rc = route_resolve(upp, NUPS, dflt, ns, name, &r, &code, &msg);
	good = rc == status && code != NULL && msg != NULL &&
	    strcmp(code, want_code) == 0;
	ok(good, "route ns=%s name=%s default=%d -> %d %s",
	    ns ? ns : "(none)", name, dflt, status, want_code);
	if (!good)
		diag("got rc %d code %s name \"%s\"", rc,
		    code ? code : "(null)", r.name);
}

static void
test_host_matches(void)
{
	ok(route_host_matches(&cfgs[UP_HUB], "registry-1.docker.io"),
	    "host matches: hostport");
	ok(route_host_matches(&cfgs[UP_HUB], "docker.io"),
	    "host matches: first alias");
	ok(route_host_matches(&cfgs[UP_HUB], "index.docker.io"),
	    "host matches: second alias");
	ok(route_host_matches(&cfgs[UP_HUB], "Docker.IO"),
	    "host matches: alias, any case");
	ok(route_host_matches(&cfgs[UP_HUB], "REGISTRY-1.docker.io"),
	    "host matches: hostport, any case");
	ok(!route_host_matches(&cfgs[UP_HUB], "ghcr.io"),
	    "host matches: other host does not");
	ok(!route_host_matches(&cfgs[UP_HUB], "docker.io.evil"),
	    "host matches: alias with suffix does not");
	ok(!route_host_matches(&cfgs[UP_HUB], "io"),
	    "host matches: alias suffix does not");
	ok(!route_host_matches(&cfgs[UP_HUB], ""),
	    "host matches: empty does not");
	ok(route_host_matches(&cfgs[UP_LOCAL], "127.0.0.1:5001"),
	    "host matches: host:port");
	ok(!route_host_matches(&cfgs[UP_LOCAL], "127.0.0.1"),
	    "host matches: host without the port does not");
	ok(!route_host_matches(&cfgs[UP_LOCAL], "127.0.0.1:5002"),
	    "host matches: other port does not");
	ok(!route_host_matches(&cfgs[UP_GHCR], "ghcr"),
	    "host matches: the prefix is not a host name");
}

static void
test_ns(void)
{
	check_ok(UP_HUB, "docker.io", "alpine", UP_HUB, "library/alpine");
	check_ok(UP_HUB, "index.docker.io", "alpine", UP_HUB,
	    "library/alpine");
	check_ok(UP_HUB, "registry-1.docker.io", "bitnami/redis", UP_HUB,
	    "bitnami/redis");
	check_ok(UP_HUB, "DOCKER.IO", "alpine", UP_HUB, "library/alpine");
	check_ok(UP_HUB, "GHCR.io", "owner/repo", UP_GHCR, "owner/repo");
	check_ok(UP_HUB, "ghcr.io", "alpine", UP_GHCR, "alpine");
	check_ok(UP_HUB, "127.0.0.1:5001", "foo", UP_LOCAL, "foo");
	check_ok(-1, "ghcr.io", "owner/repo", UP_GHCR, "owner/repo");

	/* ns wins over a prefix: nothing is stripped. */
	check_ok(UP_HUB, "ghcr.io", "ghcr/owner/repo", UP_GHCR,
	    "ghcr/owner/repo");
	check_ok(UP_HUB, "ghcr.io", "my/reg/foo", UP_GHCR, "my/reg/foo");
	check_ok(UP_HUB, "docker.io", "ghcr/owner/repo", UP_HUB,
	    "ghcr/owner/repo");
	check_ok(UP_HUB, "docker.io", "ghcr", UP_HUB, "library/ghcr");

	/* A closed list: an unknown ns is refused, never defaulted. */
	check_err(UP_HUB, "quay.io", "alpine", 404, "NAME_UNKNOWN");
	check_err(UP_HUB, "", "alpine", 404, "NAME_UNKNOWN");
	check_err(UP_HUB, "ghcr", "owner/repo", 404, "NAME_UNKNOWN");
	check_err(UP_HUB, "127.0.0.1", "foo", 404, "NAME_UNKNOWN");
	check_err(UP_HUB, "docker.io:443", "alpine", 404, "NAME_UNKNOWN");
	check_err(-1, "quay.io", "alpine", 404, "NAME_UNKNOWN");
}

static void
test_prefix(void)
{
	check_ok(UP_HUB, NULL, "ghcr/owner/repo", UP_GHCR, "owner/repo");
	check_ok(UP_HUB, NULL, "ghcr/alpine", UP_GHCR, "alpine");
	check_ok(UP_HUB, NULL, "my/reg/foo", UP_LOCAL, "foo");
	check_ok(UP_HUB, NULL, "my/reg/foo/bar", UP_LOCAL, "foo/bar");
	check_ok(-1, NULL, "ghcr/owner/repo", UP_GHCR, "owner/repo");
	check_ok(-1, NULL, "my/reg/foo", UP_LOCAL, "foo");

	/* Only at a '/' boundary, and never the prefix alone. */
	check_ok(UP_HUB, NULL, "ghcrx/a", UP_HUB, "ghcrx/a");
	check_ok(UP_HUB, NULL, "ghcr", UP_HUB, "library/ghcr");
	check_ok(UP_HUB, NULL, "xghcr/a", UP_HUB, "xghcr/a");
	check_ok(UP_HUB, NULL, "a/ghcr/b", UP_HUB, "a/ghcr/b");
	check_ok(UP_HUB, NULL, "my/reg", UP_HUB, "my/reg");
	check_ok(UP_HUB, NULL, "my/regx/foo", UP_HUB, "my/regx/foo");
	check_ok(UP_HUB, NULL, "my/foo", UP_HUB, "my/foo");
	check_ok(UP_HUB, NULL, "my", UP_HUB, "library/my");
	check_err(-1, NULL, "ghcrx/a", 404, "NAME_UNKNOWN");
	check_err(-1, NULL, "ghcr", 404, "NAME_UNKNOWN");
	check_err(-1, NULL, "my/reg", 404, "NAME_UNKNOWN");
}

static void
test_default(void)
{
	check_ok(UP_HUB, NULL, "alpine", UP_HUB, "library/alpine");
	check_ok(UP_HUB, NULL, "library/alpine", UP_HUB, "library/alpine");
	check_ok(UP_HUB, NULL, "bitnami/redis", UP_HUB, "bitnami/redis");
	check_ok(UP_HUB, NULL, "a/b/c", UP_HUB, "a/b/c");
	check_ok(UP_GHCR, NULL, "alpine", UP_GHCR, "alpine");
	check_ok(UP_GHCR, NULL, "owner/repo", UP_GHCR, "owner/repo");
	check_ok(UP_LOCAL, NULL, "foo", UP_LOCAL, "foo");
	check_ok(UP_LOCAL, NULL, "ghcr/foo", UP_GHCR, "foo");

	check_err(-1, NULL, "alpine", 404, "NAME_UNKNOWN");
	check_err(-1, NULL, "owner/repo", 404, "NAME_UNKNOWN");
	check_err(NUPS, NULL, "alpine", 404, "NAME_UNKNOWN");
	check_err(-2, NULL, "alpine", 404, "NAME_UNKNOWN");
}

static void
test_library_prefix(void)
{
	char	name[V2_NAME_MAX + 1], want[V2_NAME_MAX + 16];

	/* library/ only for one component, only on library_prefix ones. */
	check_ok(UP_HUB, NULL, "alpine", UP_HUB, "library/alpine");
	check_ok(UP_HUB, NULL, "library/alpine", UP_HUB, "library/alpine");
	check_ok(UP_GHCR, NULL, "alpine", UP_GHCR, "alpine");
	check_ok(UP_HUB, "ghcr.io", "alpine", UP_GHCR, "alpine");

	/* A prefix stripped down to one component on a library upstream. */
	cfgs[UP_GHCR].library_prefix = 1;
	check_ok(UP_HUB, NULL, "ghcr/alpine", UP_GHCR, "library/alpine");
	check_ok(UP_HUB, NULL, "ghcr/owner/repo", UP_GHCR, "owner/repo");
	cfgs[UP_GHCR].library_prefix = 0;

	/* The longest valid name still fits with library/ in front. */
	memset(name, 'a', V2_NAME_MAX);
	name[V2_NAME_MAX] = '\0';
	snprintf(want, sizeof(want), "library/%s", name);
	check_ok(UP_HUB, NULL, name, UP_HUB, want);
}

int
main(void)
{
	setup();
	test_host_matches();
	test_ns();
	test_prefix();
	test_default();
	test_library_prefix();
	return tap_done();
}

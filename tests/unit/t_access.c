/*
 * Unit tests of src/access.c: repository patterns and the access rules of
 * the "auth" section (first match decides, none means no).
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "regcache.h"
#include "tap.h"

/* The library refers to these; main.c defines them in the daemon. */
struct event_base	*ev_base;
struct evdns_base	*dns_base;
struct config		*conf;

static void
match(const char *pattern, const char *name, int want)
{
	ok(access_pattern_match(pattern, name) == want, "\"%s\" %s \"%s\"",
	    pattern, want ? "matches" : "does not match", name);
}

static void
test_patterns(void)
{
	char	 longname[300];

	match("library/alpine", "library/alpine", 1);
	match("library/alpine", "library/alpine2", 0);
	match("library/alpine", "library/alpin", 0);
	match("library/*", "library/alpine", 1);
	match("library/*", "library/a/b", 0);
	match("library/*", "library", 0);
	match("library/*", "librar/alpine", 0);
	match("team/**", "team/app", 1);
	match("team/**", "team/app/web", 1);
	match("team/**", "team", 0);
	match("team/**", "teamx/app", 0);
	match("**", "a/b/c", 1);
	match("*", "alpine", 1);
	match("*", "library/alpine", 0);
	match("**/base", "a/b/base", 1);
	match("**/base", "base", 0);
	match("*/base", "a/base", 1);
	match("*/base", "a/b/base", 0);
	match("lib*/a*e", "library/alpine", 1);
	match("lib*/a*e", "library/alpina", 0);
	match("a*b*c*d", "a-b-c-d", 1);
	match("a*b*c*d", "a/b-c-d", 0);
	match("a**d", "a/b/c/d", 1);
	match("team/*/web", "team/x/web", 1);
	match("team/*/web", "team/x/y/web", 0);
	match("team/**/web", "team/x/y/web", 1);

	/* Many stars against a long name that almost matches: the table
	 * keeps this quick whatever the pattern. */
	memset(longname, 'a', 250);
	longname[250] = '\0';
	match("*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b", longname, 0);
	match("**a**a**a**a**a**a**a**a**a**a**a**a**", longname, 1);

	ok(access_pattern_valid("library/*"), "valid: library/*");
	ok(access_pattern_valid("team/**"), "valid: team/**");
	ok(access_pattern_valid("**"), "valid: **");
	ok(access_pattern_valid("a.b_c-d/e"), "valid: name characters");
	ok(!access_pattern_valid(""), "invalid: empty");
	ok(!access_pattern_valid("Library/*"), "invalid: upper case");
	ok(!access_pattern_valid("/library"), "invalid: leading /");
	ok(!access_pattern_valid("library/"), "invalid: trailing /");
	ok(!access_pattern_valid("a//b"), "invalid: empty component");
	ok(!access_pattern_valid("a/***"), "invalid: three stars");
	ok(!access_pattern_valid("a b"), "invalid: space");
	ok(!access_pattern_valid("a:b"), "invalid: colon");
	ok(!access_pattern_valid("a?b"), "invalid: question mark");
}

/* A list of strings from a NULL-terminated argument list. */
static char **
list(size_t *n, ...)
{
	va_list		 ap;
	const char	*s;
	char		**v = NULL;

	*n = 0;
	va_start(ap, n);
	while ((s = va_arg(ap, const char *)) != NULL) {
		v = reallocarray(v, *n + 1, sizeof(*v));
		v[(*n)++] = xstrdup(s);
	}
	va_end(ap);
	return v;
}

static void
list_free(char **v, size_t n)
{
	size_t	 i;

	for (i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static void
test_rules(void)
{
	struct access_cfg	 ac;
	struct access_group	 g[1];
	struct access_rule	 r[5];
	size_t			 i;

	memset(&ac, 0, sizeof(ac));
	memset(g, 0, sizeof(g));
	memset(r, 0, sizeof(r));
	g[0].name = xstrdup("devs");
	g[0].users = list(&g[0].nusers, "bob", "carol", NULL);
	ac.groups = g;
	ac.ngroups = 1;

	/* 0: alice may pull team/ from hub. */
	r[0].users = list(&r[0].nusers, "alice", NULL);
	r[0].upstreams = list(&r[0].nupstreams, "hub", NULL);
	r[0].repos = list(&r[0].nrepos, "team/*", NULL);
	r[0].allow = 1;
	/* 1: carol is kept away from secret/ everywhere... */
	r[1].users = list(&r[1].nusers, "carol", NULL);
	r[1].repos = list(&r[1].nrepos, "secret/**", NULL);
	r[1].allow = 0;
	/* 2: ...while devs may pull anything from anywhere. */
	r[2].groups = list(&r[2].ngroups, "devs", NULL);
	r[2].allow = 1;
	/* 3: anonymous clients get library/ from hub. */
	r[3].anonymous = 1;
	r[3].upstreams = list(&r[3].nupstreams, "hub", NULL);
	r[3].repos = list(&r[3].nrepos, "library/*", NULL);
	r[3].allow = 1;
	/* 4: every user gets public/ from any upstream. */
	r[4].users = list(&r[4].nusers, "*", NULL);
	r[4].repos = list(&r[4].nrepos, "public/**", NULL);
	r[4].allow = 1;
	ac.rules = r;
	ac.nrules = 5;

	ok(access_check(&ac, "alice", "hub", "team/app"),
	    "alice: team/app on hub");
	ok(!access_check(&ac, "alice", "ecr", "team/app"),
	    "alice: not team/app on ecr (upstream not listed)");
	ok(!access_check(&ac, "alice", "hub", "team/app/x"),
	    "alice: not team/app/x (one star stays in a component)");
	ok(!access_check(&ac, "alice", "hub", "library/alpine"),
	    "alice: not library/alpine (no rule; anonymous rules are not hers)");
	ok(access_check(&ac, "alice", "ecr", "public/a/b"),
	    "alice: public/a/b through the \"*\" rule");
	ok(access_check(&ac, "bob", "ecr", "secret/x"),
	    "bob (devs): secret/x, the carol rule is not his");
	ok(!access_check(&ac, "carol", "hub", "secret/x/y"),
	    "carol: denied secret/x/y, the first match decides");
	ok(access_check(&ac, "carol", "hub", "team/app"),
	    "carol (devs): team/app");
	ok(access_check(&ac, NULL, "hub", "library/alpine"),
	    "anonymous: library/alpine on hub");
	ok(!access_check(&ac, NULL, "ecr", "library/alpine"),
	    "anonymous: not on ecr");
	ok(!access_check(&ac, NULL, "hub", "public/x"),
	    "anonymous: not public/x (\"*\" means authenticated users)");
	ok(!access_check(&ac, "mallory", "hub", "team/app"),
	    "unknown user: nothing but the \"*\" rule");
	ok(access_anonymous_allowed(&ac), "an anonymous rule allows");
	r[3].allow = 0;
	ok(!access_anonymous_allowed(&ac), "an anonymous rule that denies "
	    "does not count");
	ac.nrules = 0;
	ok(!access_check(&ac, "alice", "hub", "team/app"),
	    "no rules: nobody may pull");

	for (i = 0; i < 5; i++) {
		list_free(r[i].users, r[i].nusers);
		list_free(r[i].groups, r[i].ngroups);
		list_free(r[i].upstreams, r[i].nupstreams);
		list_free(r[i].repos, r[i].nrepos);
	}
	free(g[0].name);
	list_free(g[0].users, g[0].nusers);
}

int
main(void)
{
	test_patterns();
	test_rules();
	return tap_done();
}

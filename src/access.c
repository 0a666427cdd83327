/*
 * Access rules of the "auth" section: who (a user, a member of a group, or
 * a client without credentials) may pull from which upstream which
 * repositories.  The first rule that matches decides; when none matches
 * the answer is no.  Rules see the upstream-side repository name (after
 * routing), so a prefix or ns= cannot be used to dodge them.
 *
 * Repository patterns: '*' matches any run of characters within one path
 * component, '**' any run across components; everything else matches
 * itself.  So "team/" followed by one star covers team/app but not
 * team/app/x; with two stars it covers both; neither covers "team".
 */
#include "config.h"

#include <stdbool.h>
#include <string.h>

#include "regcache.h"

#define PATTERN_MAX		(V2_NAME_MAX + 16)	/* as struct route */
#define PATTERN_CHARS		"abcdefghijklmnopqrstuvwxyz0123456789._-/*"

enum pat_tok {
	PAT_STAR,	/* '*': within a component */
	PAT_GLOBSTAR,	/* '**': across components */
	PAT_CHAR
};

/*
 * Is a repository pattern well formed: lower-case name characters, '/'
 * and stars, no empty component, no run of three stars?
 */
int
access_pattern_valid(const char *p)
{
	size_t	 n = strlen(p);

	if (n == 0 || n > V2_NAME_MAX || strspn(p, PATTERN_CHARS) != n)
		return 0;
	if (p[0] == '/' || p[n - 1] == '/' || strstr(p, "//") != NULL ||
	    strstr(p, "***") != NULL)
		return 0;
	return 1;
}

/*
 * Does name match pattern?  A table over (pattern position, name
 * position), filled from the ends backwards, so that no pattern can make
 * the match take more than length times length steps.
 */
int
access_pattern_match(const char *pattern, const char *name)
{
	enum pat_tok	 tok[PATTERN_MAX];
	char		 ch[PATTERN_MAX];
	bool		 next[PATTERN_MAX + 1], cur[PATTERN_MAX + 1];
	size_t		 n = strlen(name), nt = 0, i, j, t;

	if (n > PATTERN_MAX || strlen(pattern) > PATTERN_MAX)
		return 0;
	for (i = 0; pattern[i] != '\0'; i++) {
		if (pattern[i] == '*' && pattern[i + 1] == '*') {
			tok[nt++] = PAT_GLOBSTAR;
			i++;
		} else if (pattern[i] == '*')
			tok[nt++] = PAT_STAR;
		else {
			ch[nt] = pattern[i];
			tok[nt++] = PAT_CHAR;
		}
	}
	/* After the last token only the end of the name matches. */
	for (j = 0; j <= n; j++)
		next[j] = j == n;
	for (t = nt; t-- > 0; ) {
		for (j = n + 1; j-- > 0; ) {
			switch (tok[t]) {
			case PAT_GLOBSTAR:
				cur[j] = next[j] || (j < n && cur[j + 1]);
				break;
			case PAT_STAR:
				cur[j] = next[j] ||
				    (j < n && name[j] != '/' && cur[j + 1]);
				break;
			case PAT_CHAR:
				cur[j] = j < n && name[j] == ch[t] &&
				    next[j + 1];
				break;
			}
		}
		memcpy(next, cur, (n + 1) * sizeof(next[0]));
	}
	return next[0];
}

/* Is name one of list? */
static int
access_listed(char **list, size_t n, const char *name)
{
	size_t	 i;

	for (i = 0; i < n; i++)
		if (strcmp(list[i], name) == 0)
			return 1;
	return 0;
}

/* Does a rule speak of this user (NULL: a client without credentials)? */
static int
access_rule_subject(const struct access_cfg *ac, const struct access_rule *r,
    const char *user)
{
	const struct access_group	*g;
	size_t				 i, k;

	if (user == NULL)
		return r->anonymous;
	if (access_listed(r->users, r->nusers, "*") ||
	    access_listed(r->users, r->nusers, user))
		return 1;
	for (i = 0; i < r->ngroups; i++) {
		for (k = 0; k < ac->ngroups; k++) {
			g = &ac->groups[k];
			if (strcmp(g->name, r->groups[i]) == 0 &&
			    access_listed(g->users, g->nusers, user))
				return 1;
		}
	}
	return 0;
}

/* Does a rule cover this upstream and repository? */
static int
access_rule_object(const struct access_rule *r, const char *upstream,
    const char *repo)
{
	size_t	 i;

	if (r->upstreams != NULL &&
	    !access_listed(r->upstreams, r->nupstreams, upstream))
		return 0;
	if (r->repos == NULL)
		return 1;
	for (i = 0; i < r->nrepos; i++)
		if (access_pattern_match(r->repos[i], repo))
			return 1;
	return 0;
}

/*
 * May user (NULL: anonymous) pull repo (the upstream-side name) from the
 * upstream of that name?  The first matching rule decides; none: no.
 */
int
access_check(const struct access_cfg *ac, const char *user,
    const char *upstream, const char *repo)
{
	const struct access_rule	*r;
	size_t				 i;

	for (i = 0; i < ac->nrules; i++) {
		r = &ac->rules[i];
		if (access_rule_subject(ac, r, user) &&
		    access_rule_object(r, upstream, repo))
			return r->allow;
	}
	return 0;
}

/* Could a client without credentials pull anything at all? */
int
access_anonymous_allowed(const struct access_cfg *ac)
{
	size_t	 i;

	for (i = 0; i < ac->nrules; i++)
		if (ac->rules[i].anonymous && ac->rules[i].allow)
			return 1;
	return 0;
}

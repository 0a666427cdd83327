/*
 * Routing: which upstream serves a request, and under which name.
 * containerd's ns= first (a closed list: an ns that names no configured
 * upstream is refused, never dialled), then a path prefix, then the
 * default upstream.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "regcache.h"

/* Does a registry host name (as containerd sends it in ns=) mean cfg? */
int
route_host_matches(const struct upstream_cfg *cfg, const char *host)
{
	size_t	i;

	if (strcasecmp(host, cfg->hostport) == 0)
		return 1;
	for (i = 0; i < cfg->naliases; i++)
		if (strcasecmp(host, cfg->aliases[i]) == 0)
			return 1;
	return 0;
}

/* Does name start with prefix followed by '/'?  Returns the rest or NULL. */
static const char *
route_strip_prefix(const char *name, const char *prefix)
{
	size_t	len = strlen(prefix);

	if (strncmp(name, prefix, len) == 0 && name[len] == '/' &&
	    name[len + 1] != '\0')
		return name + len + 1;
	return NULL;
}

/*
 * Resolve (ns, name) to an upstream and the name to ask it for.  Returns 0,
 * or the HTTP status with an OCI error code and message.
 */
int
route_resolve(struct upstream *const *ups, size_t nups, int default_idx,
    const char *ns, const char *name, struct route *out, const char **code,
    const char **msg)
{
	const char	*rest = name;
	size_t		 i;
	int		 idx = -1, n;

	memset(out, 0, sizeof(*out));
	if (ns != NULL) {
		for (i = 0; i < nups && idx == -1; i++)
			if (route_host_matches(ups[i]->cfg, ns))
				idx = (int)i;
		if (idx == -1) {
			*code = "NAME_UNKNOWN";
			*msg = "no upstream is configured for this namespace";
			return 404;
		}
		out->ns = ns;
	} else {
		for (i = 0; i < nups && idx == -1; i++) {
			if (ups[i]->cfg->prefix == NULL)
				continue;
			if ((rest = route_strip_prefix(name,
			    ups[i]->cfg->prefix)) != NULL)
				idx = (int)i;
		}
		if (idx == -1) {
			rest = name;
			idx = default_idx;
		}
		if (idx < 0 || (size_t)idx >= nups) {
			*code = "NAME_UNKNOWN";
			*msg = "no upstream serves this repository";
			return 404;
		}
	}
	if (ups[idx]->cfg->library_prefix && strchr(rest, '/') == NULL)
		n = snprintf(out->name, sizeof(out->name), "library/%s", rest);
	else
		n = snprintf(out->name, sizeof(out->name), "%s", rest);
	if (n < 0 || (size_t)n >= sizeof(out->name)) {
		*code = "NAME_INVALID";
		*msg = "repository name too long";
		return 400;
	}
	/* Only now: the caller takes a reference to what it is given. */
	out->upstream = ups[idx];
	out->upstream_index = idx;
	return 0;
}

/*
 * The grammar of the distribution spec: repository names, tags, digests,
 * and the shape of /v2/ paths.  Everything a client sends is checked here
 * before anything goes upstream.
 */
#include "config.h"

#include <string.h>

#include "regcache.h"

static int
is_lower_alnum(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static int
is_lower_hex(int c)
{
	return (c >= 'a' && c <= 'f') || (c >= '0' && c <= '9');
}

/*
 * One path component: [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*.  Returns the
 * number of bytes consumed, 0 when the component is invalid.
 */
static size_t
name_component(const char *s)
{
	const char	*p = s;

	if (!is_lower_alnum(*p))
		return 0;
	while (is_lower_alnum(*p))
		p++;
	while (*p == '.' || *p == '_' || *p == '-') {
		if (*p == '.')
			p++;
		else if (*p == '_')
			p += p[1] == '_' ? 2 : 1;
		else
			while (*p == '-')
				p++;
		if (!is_lower_alnum(*p))
			return 0;
		while (is_lower_alnum(*p))
			p++;
	}
	return (size_t)(p - s);
}

/* A repository name: components separated by '/', at most 255 bytes. */
int
v2_name_valid(const char *name)
{
	const char	*p = name;
	size_t		 n;

	if (strlen(name) > V2_NAME_MAX)
		return 0;
	for (;;) {
		if ((n = name_component(p)) == 0)
			return 0;
		p += n;
		if (*p == '\0')
			return 1;
		if (*p != '/')
			return 0;
		p++;
	}
}

/* A tag: [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}. */
int
v2_tag_valid(const char *tag)
{
	size_t	i;

	for (i = 0; tag[i] != '\0'; i++) {
		int c = (unsigned char)tag[i];
		int word = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '_';
		if (i >= V2_TAG_MAX)
			return 0;
		if (!word && (i == 0 || (c != '.' && c != '-')))
			return 0;
	}
	return i > 0;
}

/*
 * A digest we can verify: sha256 with 64 or sha512 with 128 lowercase hex
 * digits.  Other algorithms are well-formed by the grammar but we refuse
 * them, as we could never check the bytes.
 */
int
v2_digest_valid(const char *digest)
{
	const char	*hex;
	size_t		 want, i;

	if (strncmp(digest, "sha256:", 7) == 0) {
		hex = digest + 7;
		want = 64;
	} else if (strncmp(digest, "sha512:", 7) == 0) {
		hex = digest + 7;
		want = 128;
	} else
		return 0;
	for (i = 0; hex[i] != '\0'; i++)
		if (i >= want || !is_lower_hex((unsigned char)hex[i]))
			return 0;
	return i == want;
}

/*
 * Split a raw (not percent-decoded) request path into route, name and
 * reference.  The route is found from the end, since a name may itself
 * contain "manifests" or "blobs" as a component.  Returns 0, or the HTTP
 * status to answer with and the OCI error code and message.
 */
int
v2_path_parse(const char *path, struct v2_path *out, const char **code,
    const char **msg)
{
	const char	*rest, *last, *prev;
	size_t		 namelen, reflen;

	memset(out, 0, sizeof(*out));
	out->kind = V2_UNKNOWN;
	*code = "NOT_FOUND";
	*msg = "no such route";
	if (strcmp(path, "/v2") == 0 || strcmp(path, "/v2/") == 0) {
		out->kind = V2_ROOT;
		return 0;
	}
	if (strncmp(path, "/v2/", 4) != 0)
		return 404;
	rest = path + 4;

	namelen = strlen(rest);
	if (namelen > 10 && strcmp(rest + namelen - 10, "/tags/list") == 0) {
		out->kind = V2_TAGS;
		namelen -= 10;
	} else {
		if ((last = strrchr(rest, '/')) == NULL || last == rest)
			return 404;
		for (prev = last - 1; prev > rest && *prev != '/'; prev--)
			;
		if (*prev != '/')
			return 404;
		reflen = strlen(last + 1);
		if ((size_t)(last - prev - 1) == 9 &&
		    strncmp(prev + 1, "manifests", 9) == 0)
			out->kind = V2_MANIFEST;
		else if ((size_t)(last - prev - 1) == 5 &&
		    strncmp(prev + 1, "blobs", 5) == 0)
			out->kind = V2_BLOB;
		else if ((size_t)(last - prev - 1) == 9 &&
		    strncmp(prev + 1, "referrers", 9) == 0)
			out->kind = V2_REFERRERS;
		else
			return 404;
		namelen = (size_t)(prev - rest);
		if (reflen == 0)
			return 404;
		if (reflen > V2_DIGEST_MAX) {
			*code = out->kind == V2_MANIFEST && !strchr(last, ':') ?
			    "TAG_INVALID" : "DIGEST_INVALID";
			*msg = "reference too long";
			return 400;
		}
		memcpy(out->ref, last + 1, reflen);
		out->ref[reflen] = '\0';
		out->ref_is_digest = strchr(out->ref, ':') != NULL;
	}

	if (namelen == 0 || namelen > V2_NAME_MAX) {
		*code = "NAME_INVALID";
		*msg = "invalid repository name";
		return 400;
	}
	memcpy(out->name, rest, namelen);
	out->name[namelen] = '\0';
	if (!v2_name_valid(out->name)) {
		*code = "NAME_INVALID";
		*msg = "invalid repository name";
		return 400;
	}
	if (out->kind == V2_TAGS)
		return 0;
	if (out->ref_is_digest || out->kind != V2_MANIFEST) {
		if (!v2_digest_valid(out->ref)) {
			*code = "DIGEST_INVALID";
			*msg = "invalid or unsupported digest";
			return 400;
		}
	} else if (!v2_tag_valid(out->ref)) {
		*code = "TAG_INVALID";
		*msg = "invalid tag";
		return 400;
	}
	return 0;
}

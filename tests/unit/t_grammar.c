/*
 * Unit tests of src/v2_grammar.c: repository names, tags, digests and the
 * split of /v2/ request paths into route, name and reference.
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

#define SHA256_HEX \
	"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define SHA256	"sha256:" SHA256_HEX
#define SHA512	"sha512:" SHA256_HEX SHA256_HEX

/* Fills buf with n copies of c and a NUL. */
static char *
repeat(char *buf, int c, size_t n)
{
	memset(buf, c, n);
	buf[n] = '\0';
	return buf;
}

static const char *
kind_str(enum v2_kind k)
{
	switch (k) {
	case V2_ROOT:		return "ROOT";
	case V2_MANIFEST:	return "MANIFEST";
	case V2_BLOB:		return "BLOB";
	case V2_TAGS:		return "TAGS";
	case V2_REFERRERS:	return "REFERRERS";
	case V2_UNKNOWN:	return "UNKNOWN";
	}
	return "?";
}

static void
test_names(void)
{
	static const char *good[] = {
		"a", "library/alpine", "a/b/c", "foo.bar", "foo_bar",
		"foo__bar", "foo---bar", "a0/9z", "0", "a-b.c_d__e/f"
	};
	static const char *bad[] = {
		"", "A", "Alpine", "-a", "a-", "a..b", "a___b", "a/", "/a",
		"a//b", ".", "..", "a/../b", "%2e%2e", "a b", "caf\xc3\xa9",
		"a.", "_a", "a_", "a/.b", "a\tb", "a:b", "a@b"
	};
	char	 buf[512];
	size_t	 i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		ok(v2_name_valid(good[i]) == 1, "name valid: \"%s\"", good[i]);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ok(v2_name_valid(bad[i]) == 0, "name invalid: \"%s\"", bad[i]);

	ok(v2_name_valid(repeat(buf, 'a', 255)) == 1, "name: 255 chars valid");
	ok(v2_name_valid(repeat(buf, 'a', 256)) == 0,
	    "name: 256 chars invalid");
	/* 127 components "a/" + "a" = 255 bytes. */
	buf[0] = '\0';
	for (i = 0; i < 127; i++)
		strcat(buf, "a/");
	strcat(buf, "a");
	ok(strlen(buf) == 255 && v2_name_valid(buf) == 1,
	    "name: 255 chars in 128 components valid");
	strcat(buf, "b");
	ok(v2_name_valid(buf) == 0, "name: 256 chars in components invalid");
}

static void
test_tags(void)
{
	static const char *good[] = {
		"latest", "v1.0", "_x", "V1", "1", "a-b_c.d", "x..y", "x--"
	};
	static const char *bad[] = {
		"", ".x", "-x", "a:b", "a/b", "a b", "a@b", "caf\xc3\xa9"
	};
	char	 buf[256];
	size_t	 i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		ok(v2_tag_valid(good[i]) == 1, "tag valid: \"%s\"", good[i]);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ok(v2_tag_valid(bad[i]) == 0, "tag invalid: \"%s\"", bad[i]);
	ok(v2_tag_valid(repeat(buf, 'a', 128)) == 1, "tag: 128 chars valid");
	ok(v2_tag_valid(repeat(buf, 'a', 129)) == 0,
	    "tag: 129 chars invalid");
}

static void
test_digests(void)
{
	char	 buf[256];
	size_t	 i;

	ok(v2_digest_valid(SHA256) == 1, "digest: sha256 valid");
	ok(v2_digest_valid(SHA512) == 1, "digest: sha512 valid");
	ok(v2_digest_valid("sha256:" "0123456789abcdef0123456789abcdef"
	    "0123456789abcdef0123456789abcdef") == 1,
	    "digest: sha256 all hex digits valid");

	snprintf(buf, sizeof(buf), "%s", SHA256);
	for (i = 7; buf[i] != '\0'; i++)
		if (buf[i] >= 'a' && buf[i] <= 'f')
			buf[i] = (char)(buf[i] - 'a' + 'A');
	ok(v2_digest_valid(buf) == 0, "digest: uppercase hex invalid");
	snprintf(buf, sizeof(buf), "%s", SHA256);
	buf[strlen(buf) - 1] = 'E';
	ok(v2_digest_valid(buf) == 0, "digest: one uppercase digit invalid");

	snprintf(buf, sizeof(buf), "%.*s", 7 + 63, SHA256);
	ok(v2_digest_valid(buf) == 0, "digest: sha256 with 63 hex invalid");
	snprintf(buf, sizeof(buf), "%s0", SHA256);
	ok(v2_digest_valid(buf) == 0, "digest: sha256 with 65 hex invalid");
	snprintf(buf, sizeof(buf), "%.*s", 7 + 127, SHA512);
	ok(v2_digest_valid(buf) == 0, "digest: sha512 with 127 hex invalid");
	snprintf(buf, sizeof(buf), "%s0", SHA512);
	ok(v2_digest_valid(buf) == 0, "digest: sha512 with 129 hex invalid");
	snprintf(buf, sizeof(buf), "sha512:%s", SHA256_HEX);
	ok(v2_digest_valid(buf) == 0, "digest: sha512 with 64 hex invalid");

	ok(v2_digest_valid("sha256:xyz") == 0, "digest: sha256:xyz invalid");
	ok(v2_digest_valid("md5:d41d8cd98f00b204e9800998ecf8427e") == 0,
	    "digest: md5 refused");
	ok(v2_digest_valid("sha256:") == 0, "digest: sha256: empty invalid");
	ok(v2_digest_valid(SHA256_HEX) == 0, "digest: no colon invalid");
	ok(v2_digest_valid("") == 0, "digest: empty invalid");
	ok(v2_digest_valid("SHA256:" SHA256_HEX) == 0,
	    "digest: uppercase algorithm invalid");
	ok(v2_digest_valid("sha256:" SHA256_HEX "\n") == 0,
	    "digest: trailing newline invalid");
}

/*
 * Parses path and checks status, kind, name, reference and error code in
 * one assertion; on error only status and code are checked.
 */
static void
check_path(const char *path, int want_status, enum v2_kind want_kind,
    const char *want_name, const char *want_ref, int want_is_digest,
    const char *want_code)
{
	struct v2_path	 p;
	const char	*code = NULL, *msg = NULL;
	int		 rc, good;

	rc = v2_path_parse(path, &p, &code, &msg);
	if (want_status == 0)
		good = rc == 0 && p.kind == want_kind &&
		    strcmp(p.name, want_name) == 0 &&
		    strcmp(p.ref, want_ref) == 0 &&
		    p.ref_is_digest == want_is_digest;
	else
		good = rc == want_status && code != NULL && msg != NULL &&
		    strcmp(code, want_code) == 0;
	ok(good, "path \"%.60s%s\" -> %d %s", path,
	    strlen(path) > 60 ? "..." : "", want_status,
	    want_status == 0 ? kind_str(want_kind) : want_code);
	if (!good)
		diag("got %d kind %s name \"%s\" ref \"%s\" digest %d "
		    "code %s", rc, kind_str(p.kind), p.name, p.ref,
		    p.ref_is_digest, code ? code : "(null)");
}

static void
test_paths(void)
{
	char	 path[1024], buf[512];

	check_path("/v2/", 0, V2_ROOT, "", "", 0, NULL);
	check_path("/v2", 0, V2_ROOT, "", "", 0, NULL);

	check_path("/v2/alpine/manifests/latest", 0, V2_MANIFEST,
	    "alpine", "latest", 0, NULL);
	check_path("/v2/library/alpine/manifests/3.19", 0, V2_MANIFEST,
	    "library/alpine", "3.19", 0, NULL);
	check_path("/v2/a/b/c/manifests/v1.0", 0, V2_MANIFEST,
	    "a/b/c", "v1.0", 0, NULL);
	check_path("/v2/alpine/manifests/" SHA256, 0, V2_MANIFEST,
	    "alpine", SHA256, 1, NULL);
	check_path("/v2/alpine/manifests/" SHA512, 0, V2_MANIFEST,
	    "alpine", SHA512, 1, NULL);
	check_path("/v2/alpine/blobs/" SHA256, 0, V2_BLOB,
	    "alpine", SHA256, 1, NULL);
	check_path("/v2/a/b/blobs/" SHA512, 0, V2_BLOB,
	    "a/b", SHA512, 1, NULL);
	check_path("/v2/alpine/tags/list", 0, V2_TAGS, "alpine", "", 0, NULL);
	check_path("/v2/a/b/tags/list", 0, V2_TAGS, "a/b", "", 0, NULL);
	check_path("/v2/tags/tags/list", 0, V2_TAGS, "tags", "", 0, NULL);
	check_path("/v2/alpine/referrers/" SHA256, 0, V2_REFERRERS,
	    "alpine", SHA256, 1, NULL);

	/* Route words as name components: the route is found from the end. */
	check_path("/v2/a/manifests/manifests/latest", 0, V2_MANIFEST,
	    "a/manifests", "latest", 0, NULL);
	check_path("/v2/manifests/manifests/latest", 0, V2_MANIFEST,
	    "manifests", "latest", 0, NULL);
	check_path("/v2/a/manifests/manifests", 0, V2_MANIFEST,
	    "a", "manifests", 0, NULL);
	check_path("/v2/blobs/blobs/" SHA256, 0, V2_BLOB,
	    "blobs", SHA256, 1, NULL);
	check_path("/v2/a/blobs/x/manifests/latest", 0, V2_MANIFEST,
	    "a/blobs/x", "latest", 0, NULL);
	check_path("/v2/a/manifests/b/blobs/" SHA256, 0, V2_BLOB,
	    "a/manifests/b", SHA256, 1, NULL);
	check_path("/v2/tags/list/tags/list", 0, V2_TAGS,
	    "tags/list", "", 0, NULL);
	check_path("/v2/a/referrers/manifests/latest", 0, V2_MANIFEST,
	    "a/referrers", "latest", 0, NULL);

	/* Unknown routes. */
	check_path("/", 404, V2_UNKNOWN, NULL, NULL, 0, "NOT_FOUND");
	check_path("", 404, V2_UNKNOWN, NULL, NULL, 0, "NOT_FOUND");
	check_path("/v2x", 404, V2_UNKNOWN, NULL, NULL, 0, "NOT_FOUND");
	check_path("/v3/a/manifests/latest", 404, V2_UNKNOWN, NULL, NULL, 0,
	    "NOT_FOUND");
	check_path("/v2/_catalog", 404, V2_UNKNOWN, NULL, NULL, 0,
	    "NOT_FOUND");
	check_path("/v2/alpine", 404, V2_UNKNOWN, NULL, NULL, 0, "NOT_FOUND");
	check_path("/v2/alpine/latest", 404, V2_UNKNOWN, NULL, NULL, 0,
	    "NOT_FOUND");
	check_path("/v2/a/b/c", 404, V2_UNKNOWN, NULL, NULL, 0, "NOT_FOUND");
	check_path("/v2/a/manifest/latest", 404, V2_UNKNOWN, NULL, NULL, 0,
	    "NOT_FOUND");
	check_path("/v2/a/Manifests/latest", 404, V2_UNKNOWN, NULL, NULL, 0,
	    "NOT_FOUND");
	check_path("/v2/a/tags/lists", 404, V2_UNKNOWN, NULL, NULL, 0,
	    "NOT_FOUND");
	check_path("/v2/a/tags/list/", 404, V2_UNKNOWN, NULL, NULL, 0,
	    "NOT_FOUND");
	check_path("/v2/tags/list", 404, V2_UNKNOWN, NULL, NULL, 0,
	    "NOT_FOUND");
	check_path("/v2/manifests/latest", 404, V2_UNKNOWN, NULL, NULL, 0,
	    "NOT_FOUND");
	check_path("/v2/a/blobs/uploads/", 404, V2_UNKNOWN, NULL, NULL, 0,
	    "NOT_FOUND");
	check_path("/v2/a/blobs/uploads/1234", 404, V2_UNKNOWN, NULL, NULL, 0,
	    "NOT_FOUND");

	/* Empty reference (trailing slash). */
	check_path("/v2/alpine/manifests/", 404, V2_UNKNOWN, NULL, NULL, 0,
	    "NOT_FOUND");
	check_path("/v2/alpine/blobs/", 404, V2_UNKNOWN, NULL, NULL, 0,
	    "NOT_FOUND");
	check_path("/v2/alpine/referrers/", 404, V2_UNKNOWN, NULL, NULL, 0,
	    "NOT_FOUND");

	/* Blobs and referrers need a digest. */
	check_path("/v2/alpine/blobs/latest", 400, V2_UNKNOWN, NULL, NULL, 0,
	    "DIGEST_INVALID");
	check_path("/v2/alpine/referrers/latest", 400, V2_UNKNOWN, NULL, NULL,
	    0, "DIGEST_INVALID");
	check_path("/v2/alpine/blobs/sha256:abc", 400, V2_UNKNOWN, NULL, NULL,
	    0, "DIGEST_INVALID");
	check_path("/v2/alpine/manifests/sha256:abc", 400, V2_UNKNOWN, NULL,
	    NULL, 0, "DIGEST_INVALID");
	check_path("/v2/alpine/manifests/md5:d41d8cd98f00b204e9800998ecf8427e",
	    400, V2_UNKNOWN, NULL, NULL, 0, "DIGEST_INVALID");
	check_path("/v2/alpine/manifests/a:b", 400, V2_UNKNOWN, NULL, NULL, 0,
	    "DIGEST_INVALID");

	/* Bad names. */
	check_path("/v2/Alpine/manifests/latest", 400, V2_UNKNOWN, NULL, NULL,
	    0, "NAME_INVALID");
	check_path("/v2//manifests/latest", 400, V2_UNKNOWN, NULL, NULL, 0,
	    "NAME_INVALID");
	check_path("/v2/a//b/manifests/latest", 400, V2_UNKNOWN, NULL, NULL, 0,
	    "NAME_INVALID");
	check_path("/v2/a-/manifests/latest", 400, V2_UNKNOWN, NULL, NULL, 0,
	    "NAME_INVALID");
	check_path("/v2/a b/manifests/latest", 400, V2_UNKNOWN, NULL, NULL, 0,
	    "NAME_INVALID");
	check_path("/v2/../etc/manifests/x", 400, V2_UNKNOWN, NULL, NULL, 0,
	    "NAME_INVALID");
	check_path("/v2/a/../b/manifests/x", 400, V2_UNKNOWN, NULL, NULL, 0,
	    "NAME_INVALID");
	check_path("/v2/./a/manifests/x", 400, V2_UNKNOWN, NULL, NULL, 0,
	    "NAME_INVALID");
	check_path("/v2/%2e%2e/manifests/x", 400, V2_UNKNOWN, NULL, NULL, 0,
	    "NAME_INVALID");
	check_path("/v2/a%2fb/manifests/x", 400, V2_UNKNOWN, NULL, NULL, 0,
	    "NAME_INVALID");
	check_path("/v2/../blobs/" SHA256, 400, V2_UNKNOWN, NULL, NULL, 0,
	    "NAME_INVALID");
	check_path("/v2/A/tags/list", 400, V2_UNKNOWN, NULL, NULL, 0,
	    "NAME_INVALID");
	check_path("/v2//tags/list", 404, V2_UNKNOWN, NULL, NULL, 0,
	    "NOT_FOUND");

	snprintf(path, sizeof(path), "/v2/%s/manifests/latest",
	    repeat(buf, 'a', 255));
	check_path(path, 0, V2_MANIFEST, buf, "latest", 0, NULL);
	snprintf(path, sizeof(path), "/v2/%s/manifests/latest",
	    repeat(buf, 'a', 256));
	check_path(path, 400, V2_UNKNOWN, NULL, NULL, 0, "NAME_INVALID");
	snprintf(path, sizeof(path), "/v2/%s/tags/list",
	    repeat(buf, 'a', 256));
	check_path(path, 400, V2_UNKNOWN, NULL, NULL, 0, "NAME_INVALID");

	/* Tag lengths: 128 is fine, 129 is too long, as is a huge one. */
	snprintf(path, sizeof(path), "/v2/a/manifests/%s",
	    repeat(buf, 't', 128));
	check_path(path, 0, V2_MANIFEST, "a", buf, 0, NULL);
	snprintf(path, sizeof(path), "/v2/a/manifests/%s",
	    repeat(buf, 't', 129));
	check_path(path, 400, V2_UNKNOWN, NULL, NULL, 0, "TAG_INVALID");
	snprintf(path, sizeof(path), "/v2/a/manifests/%s",
	    repeat(buf, 't', V2_DIGEST_MAX + 1));
	check_path(path, 400, V2_UNKNOWN, NULL, NULL, 0, "TAG_INVALID");
	snprintf(path, sizeof(path), "/v2/a/manifests/%s",
	    repeat(buf, 't', 400));
	check_path(path, 400, V2_UNKNOWN, NULL, NULL, 0, "TAG_INVALID");
	check_path("/v2/a/manifests/.x", 400, V2_UNKNOWN, NULL, NULL, 0,
	    "TAG_INVALID");
	check_path("/v2/a/manifests/-x", 400, V2_UNKNOWN, NULL, NULL, 0,
	    "TAG_INVALID");

	/* Over-long digests. */
	snprintf(path, sizeof(path), "/v2/a/blobs/%s0", SHA512);
	check_path(path, 400, V2_UNKNOWN, NULL, NULL, 0, "DIGEST_INVALID");
	snprintf(path, sizeof(path), "/v2/a/manifests/%s%s", SHA512,
	    SHA256_HEX);
	check_path(path, 400, V2_UNKNOWN, NULL, NULL, 0, "DIGEST_INVALID");
	snprintf(path, sizeof(path), "/v2/a/blobs/%s", repeat(buf, 'b', 300));
	check_path(path, 400, V2_UNKNOWN, NULL, NULL, 0, "DIGEST_INVALID");
}

int
main(void)
{
	test_names();
	test_tags();
	test_digests();
	test_paths();
	return tap_done();
}

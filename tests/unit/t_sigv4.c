/*
 * Unit tests of src/aws_sigv4.c against the AWS Signature Version 4 test
 * suite (tests/data/aws4/<case>/<case>.{req,creq,sts,authz}): each .req is
 * parsed, signed, and the canonical request, string to sign and
 * Authorization value compared byte for byte.  Then a few cases of our
 * own: the session token added by the signer, a '%' in the path encoded
 * again, and an ECR GetAuthorizationToken request.
 */
#include "config.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "regcache.h"
#include "tap.h"

/* The library refers to these; main.c defines them in the daemon. */
struct event_base	*ev_base;
struct evdns_base	*dns_base;
struct config		*conf;

#define SUITE_AKID	"AKIDEXAMPLE"
#define SUITE_SECRET	"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define SUITE_REGION	"us-east-1"
#define SUITE_SERVICE	"service"
#define SUITE_TIME	((time_t)1440938160)	/* 20150830T123600Z */

/* A parsed .req file. */
struct req_file {
	char			*rf_method;
	char			*rf_path;
	struct evkeyvalq	 rf_headers;
	char			*rf_body;
	size_t			 rf_body_len;
};

/* Reads a whole file into a NUL-terminated malloc'd string, or NULL. */
static char *
slurp(const char *path, size_t *lenp)
{
	FILE	*f;
	char	*s = NULL;
	long	 len;

	if ((f = fopen(path, "rb")) == NULL)
		return NULL;
	if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 ||
	    fseek(f, 0, SEEK_SET) != 0 ||
	    (s = malloc((size_t)len + 1)) == NULL ||
	    fread(s, 1, (size_t)len, f) != (size_t)len) {
		free(s);
		fclose(f);
		return NULL;
	}
	fclose(f);
	s[len] = '\0';
	if (lenp != NULL)
		*lenp = (size_t)len;
	return s;
}

/* Appends a header name/value to q without any validation. */
static void
header_add(struct evkeyvalq *q, const char *name, size_t nlen,
    const char *value)
{
	struct evkeyval	*kv;

	kv = xcalloc(1, sizeof(*kv));
	kv->key = xstrndup(name, nlen);
	kv->value = xstrdup(value);
	TAILQ_INSERT_TAIL(q, kv, next);
}

/* Frees what header_add added. */
static void
header_free_all(struct evkeyvalq *q)
{
	struct evkeyval	*kv;

	while ((kv = TAILQ_FIRST(q)) != NULL) {
		TAILQ_REMOVE(q, kv, next);
		free(kv->key);
		free(kv->value);
		free(kv);
	}
}

/* Removes the headers named name from q. */
static void
header_remove(struct evkeyvalq *q, const char *name)
{
	struct evkeyval	*kv, *next;

	for (kv = TAILQ_FIRST(q); kv != NULL; kv = next) {
		next = TAILQ_NEXT(kv, next);
		if (strcasecmp(kv->key, name) == 0) {
			TAILQ_REMOVE(q, kv, next);
			free(kv->key);
			free(kv->value);
			free(kv);
		}
	}
}

/*
 * Parses the suite's .req text: "METHOD target HTTP/1.1", "Name:value"
 * lines where a line starting with white space continues the previous
 * value (kept with its '\n'), a blank line, the body.  The target may
 * hold spaces, so the version is what follows the last one.
 */
static int
req_parse(char *text, size_t len, struct req_file *rf)
{
	char		*line, *end, *sp, *colon, *v, *next;
	struct evkeyval	*last = NULL;
	size_t		 l;

	memset(rf, 0, sizeof(*rf));
	TAILQ_INIT(&rf->rf_headers);
	end = text + len;
	line = text;
	l = strcspn(line, "\n");
	next = line + l + (line + l < end);
	line[l] = '\0';
	if (l > 0 && line[l - 1] == '\r')
		line[l - 1] = '\0';
	if ((sp = strchr(line, ' ')) == NULL ||
	    strrchr(line, ' ') == sp)
		return -1;
	rf->rf_method = xstrndup(line, (size_t)(sp - line));
	rf->rf_path = xstrndup(sp + 1, (size_t)(strrchr(line, ' ') - sp - 1));
	line = next;

	while (line < end) {
		l = strcspn(line, "\n");
		next = line + l + (line + l < end);
		line[l] = '\0';
		if (l > 0 && line[l - 1] == '\r')
			line[--l] = '\0';
		if (l == 0) {
			rf->rf_body = xstrndup(next, (size_t)(end - next));
			rf->rf_body_len = (size_t)(end - next);
			return 0;
		}
		if (line[0] == ' ' || line[0] == '\t') {
			if (last == NULL)
				return -1;
			xasprintf(&v, "%s\n%s", last->value, line);
			free(last->value);
			last->value = v;
		} else {
			if ((colon = strchr(line, ':')) == NULL)
				return -1;
			header_add(&rf->rf_headers, line,
			    (size_t)(colon - line), colon + 1);
			last = TAILQ_LAST(&rf->rf_headers, evkeyvalq);
		}
		line = next;
	}
	return 0;
}

/* Frees what req_parse set. */
static void
req_clear(struct req_file *rf)
{
	free(rf->rf_method);
	free(rf->rf_path);
	free(rf->rf_body);
	header_free_all(&rf->rf_headers);
}

/* The suite's expected outputs of one case. */
struct expect {
	char	*ex_creq;
	char	*ex_sts;
	char	*ex_authz;
};

/* Signs rf and compares the three outputs with ex. */
static void
check_sign(const char *name, const struct req_file *rf, const char *token,
    const struct expect *ex)
{
	struct sigv4_request	 req;
	struct sigv4_creds	 creds;
	char			*creq, *sts, *authz;
	int			 rc;

	memset(&req, 0, sizeof(req));
	req.method = rf->rf_method;
	req.path = rf->rf_path;
	req.headers = &rf->rf_headers;
	req.body = rf->rf_body;
	req.body_len = rf->rf_body_len;
	creds.access_key = SUITE_AKID;
	creds.secret_key = SUITE_SECRET;
	creds.session_token = token;
	rc = sigv4_sign(&req, &creds, SUITE_REGION, SUITE_SERVICE, SUITE_TIME,
	    &creq, &sts, &authz);
	ok(rc == 0, "%s: signs", name);
	is_str(creq, ex->ex_creq, "%s: canonical request", name);
	is_str(sts, ex->ex_sts, "%s: string to sign", name);
	is_str(authz, ex->ex_authz, "%s: authorization", name);
	free(creq);
	free(sts);
	free(authz);
}

/* Reads <dir>/<name>/<name>.<ext>. */
static char *
case_file(const char *dir, const char *name, const char *ext, size_t *lenp)
{
	char	*path, *s;

	xasprintf(&path, "%s/%s/%s.%s", dir, name, name, ext);
	s = slurp(path, lenp);
	if (s == NULL)
		diag("cannot read %s", path);
	free(path);
	return s;
}

/* Runs one suite case, and for post-sts-header-before also the same
 * request without the token header, which the signer must add. */
static void
run_case(const char *dir, const char *name)
{
	struct req_file	 rf;
	struct expect	 ex;
	const char	*token;
	char		*text;
	size_t		 len;

	text = case_file(dir, name, "req", &len);
	ex.ex_creq = case_file(dir, name, "creq", NULL);
	ex.ex_sts = case_file(dir, name, "sts", NULL);
	ex.ex_authz = case_file(dir, name, "authz", NULL);
	if (text == NULL || ex.ex_creq == NULL || ex.ex_sts == NULL ||
	    ex.ex_authz == NULL || req_parse(text, len, &rf) != 0) {
		ok(0, "%s: case files read and parsed", name);
		goto done;
	}
	/* A token in the request was signed (post-sts-header-before); the
	 * one post-sts-header-after adds is not part of the signature. */
	token = evhttp_find_header(&rf.rf_headers, "X-Amz-Security-Token");
	check_sign(name, &rf, token, &ex);
	if (token != NULL) {
		char	*tok = xstrdup(token);

		header_remove(&rf.rf_headers, "X-Amz-Security-Token");
		check_sign("token added by the signer", &rf, tok, &ex);
		free(tok);
	}
	req_clear(&rf);
done:
	free(text);
	free(ex.ex_creq);
	free(ex.ex_sts);
	free(ex.ex_authz);
}

/* qsort order of case names. */
static int
name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs every case directory under dir, in name order; returns the count. */
static int
run_suite(const char *dir)
{
	DIR		*d;
	struct dirent	*de;
	char		**names = NULL;
	size_t		 n = 0, i;

	if ((d = opendir(dir)) == NULL) {
		diag("cannot open %s", dir);
		return 0;
	}
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		names = realloc(names, (n + 1) * sizeof(*names));
		if (names == NULL)
			fatal("realloc");
		names[n++] = xstrdup(de->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof(*names), name_cmp);
	for (i = 0; i < n; i++) {
		run_case(dir, names[i]);
		free(names[i]);
	}
	free(names);
	return (int)n;
}

/* A '%' already in a non-S3 path is encoded again; the query is not. */
static void
test_double_encoding(void)
{
	struct sigv4_request	 req;
	struct sigv4_creds	 creds = { SUITE_AKID, SUITE_SECRET, NULL };
	struct evkeyvalq	 h;
	char			*creq = NULL;
	const char		*want = "GET\n/a%2520b/c\nx=A&y=\n"
	    "host:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
	    "host;x-amz-date\n";

	TAILQ_INIT(&h);
	header_add(&h, "Host", 4, "example.amazonaws.com");
	memset(&req, 0, sizeof(req));
	req.method = "GET";
	req.path = "/a%20b/c?x=%41&y";
	req.headers = &h;
	ok(sigv4_sign(&req, &creds, SUITE_REGION, SUITE_SERVICE, SUITE_TIME,
	    &creq, NULL, NULL) == 0, "double encoding: signs");
	ok(creq != NULL && strncmp(creq, want, strlen(want)) == 0,
	    "double encoding: path encoded again, query decoded and sorted, "
	    "x-amz-date added");
	free(creq);
	header_free_all(&h);
}

/* The ECR token request regcache sends (docs: PROTOCOL.md "AWS ECR"). */
static void
test_ecr(void)
{
	static const char	 body[] = "{}";
	struct sigv4_request	 req;
	struct sigv4_creds	 creds = { SUITE_AKID, SUITE_SECRET, "TOKEN" };
	struct evkeyvalq	 h;
	char			 date[SIGV4_DATE_LEN];
	char			*creq = NULL, *authz = NULL;
	const char		*want = "AWS4-HMAC-SHA256 Credential="
	    "AKIDEXAMPLE/20150830/us-east-1/ecr/aws4_request, SignedHeaders="
	    "content-type;host;x-amz-date;x-amz-security-token;x-amz-target, "
	    "Signature=";

	ok(sigv4_amz_date(SUITE_TIME, date, sizeof(date)) == 0 &&
	    strcmp(date, "20150830T123600Z") == 0, "sigv4_amz_date");
	TAILQ_INIT(&h);
	header_add(&h, "Host", 4, "api.ecr.us-east-1.amazonaws.com");
	header_add(&h, "X-Amz-Target", 12,
	    "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken");
	header_add(&h, "Content-Type", 12, "application/x-amz-json-1.1");
	header_add(&h, "X-Amz-Date", 10, date);
	memset(&req, 0, sizeof(req));
	req.method = "POST";
	req.path = "/";
	req.headers = &h;
	req.body = body;
	req.body_len = strlen(body);
	ok(sigv4_sign(&req, &creds, "us-east-1", "ecr", SUITE_TIME, &creq,
	    NULL, &authz) == 0, "ecr: signs");
	ok(authz != NULL && strncmp(authz, want, strlen(want)) == 0 &&
	    strlen(authz) == strlen(want) + 64, "ecr: authorization scope");
	if (authz != NULL)
		diag("%s", authz);
	ok(creq != NULL && strstr(creq, "\nx-amz-security-token:TOKEN\n") !=
	    NULL, "ecr: session token signed");
	free(creq);
	free(authz);
	header_free_all(&h);
}

int
main(void)
{
	const char	*top = getenv("TOP_SRCDIR");
	char		*dir;
	int		 n;

	if (top == NULL || *top == '\0')
		top = ".";
	xasprintf(&dir, "%s/tests/data/aws4", top);
	n = run_suite(dir);
	ok(n >= 25, "suite cases found under %s: %d", dir, n);
	free(dir);
	test_double_encoding();
	test_ecr();
	return tap_done();
}

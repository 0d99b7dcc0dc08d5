/* containerd filter expressions: see filter.h. */
#include <ctype.h>
#include <errno.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include "filter.h"

enum op { OP_PRESENT, OP_EQ, OP_NE, OP_MATCH };

struct selector {
	char **path;
	size_t npath;
	enum op op;
	char *value;
	regex_t re;
	int has_re;
};

struct conj {
	struct selector *sel;
	size_t n;
};

struct filter {
	struct conj *any;	/* OR of ANDs */
	size_t n;
	int all;		/* an empty expression: everything matches */
};

struct parser {
	const char *s;
	size_t pos;
	const char *expr;
	struct daxfs_err *err;
};

static int fail(struct parser *p, const char *what)
{
	return daxfs_err_set(p->err, -EINVAL, "filter \"%s\": %s at offset %zu", p->expr, what,
			     p->pos);
}

static void skip_space(struct parser *p)
{
	while (isspace((unsigned char)p->s[p->pos]))
		p->pos++;
}

/* Append code point cp to out as UTF-8. */
static size_t put_utf8(char *out, unsigned long cp)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | cp >> 6);
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | cp >> 12);
		out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | cp >> 18);
	out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
	out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* n digits of base at s; -1 if they are not all there. */
static long digits(const char *s, int n, int base)
{
	char buf[9];
	char *end;
	long v;

	if (strnlen(s, (size_t)n) < (size_t)n)
		return -1;
	memcpy(buf, s, (size_t)n);
	buf[n] = 0;
	if (!isxdigit((unsigned char)buf[0]))
		return -1;
	v = strtol(buf, &end, base);
	return *end ? -1 : v;
}

/* One escape after a backslash of a Go string: the bytes it stands for
 * go to out; returns how many input bytes it used, or -1. */
static int escape(const char *s, char *out, size_t *o)
{
	static const char from[] = "abfnrtv\\\"", to[] = "\a\b\f\n\r\t\v\\\"";
	const char *c = *s ? strchr(from, *s) : NULL;
	long v;

	if (c) {
		out[(*o)++] = to[c - from];
		return 1;
	}
	switch (*s) {
	case 'x':
		v = digits(s + 1, 2, 16);
		if (v < 0)
			return -1;
		out[(*o)++] = (char)v;
		return 3;
	case 'u':
	case 'U':
		v = digits(s + 1, *s == 'u' ? 4 : 8, 16);
		if (v < 0 || v > 0x10ffff)
			return -1;
		*o += put_utf8(out + *o, (unsigned long)v);
		return *s == 'u' ? 5 : 9;
	}
	if (*s >= '0' && *s <= '7') {
		v = digits(s, 3, 8);
		if (v < 0 || v > 255)
			return -1;
		out[(*o)++] = (char)v;
		return 3;
	}
	return -1;
}

/* A quoted string at p->pos: "go string", or /re/ and |re| if alt. */
static int quoted(struct parser *p, int alt, char **out)
{
	char q = p->s[p->pos], *buf;
	size_t o = 0, i = p->pos + 1;

	if (q != '"' && !(alt && (q == '/' || q == '|')))
		return fail(p, "unexpected quote");
	buf = malloc(strlen(p->s + i) * 4 + 1);
	if (!buf)
		return -ENOMEM;
	while (p->s[i] && p->s[i] != q) {
		if (p->s[i] != '\\') {
			buf[o++] = p->s[i++];
		} else if (q != '"') {
			/* a regular expression keeps its escapes but \q */
			if (p->s[i + 1] != q)
				buf[o++] = '\\';
			if (p->s[i + 1])
				buf[o++] = p->s[i + 1];
			i += p->s[i + 1] ? 2 : 1;
		} else {
			int n = escape(p->s + i + 1, buf, &o);

			if (n < 0) {
				free(buf);
				p->pos = i;
				return fail(p, "bad escape sequence");
			}
			i += 1 + (size_t)n;
		}
	}
	if (p->s[i] != q) {
		free(buf);
		return fail(p, "unterminated quoted string");
	}
	buf[o] = 0;
	p->pos = i + 1;
	*out = buf;
	return 0;
}

static int is_field_char(char c)
{
	return isalnum((unsigned char)c) || c == '_';
}

static int field(struct parser *p, char **out)
{
	size_t start;

	skip_space(p);
	if (p->s[p->pos] == '"' || p->s[p->pos] == '/' || p->s[p->pos] == '|')
		return quoted(p, 0, out);
	start = p->pos;
	while (is_field_char(p->s[p->pos]))
		p->pos++;
	if (p->pos == start)
		return fail(p, "expected a field or a quoted string");
	*out = strndup(p->s + start, p->pos - start);
	return *out ? 0 : -ENOMEM;
}

static int fieldpath(struct parser *p, struct selector *sel)
{
	for (;;) {
		char **np = realloc(sel->path, (sel->npath + 1) * sizeof(*np));
		int rc;

		if (!np)
			return -ENOMEM;
		sel->path = np;
		rc = field(p, &sel->path[sel->npath]);
		if (rc < 0)
			return rc;
		sel->npath++;
		skip_space(p);
		if (p->s[p->pos] != '.')
			return 0;
		p->pos++;
	}
}

static int operator(struct parser *p, enum op *op)
{
	const char *s = p->s + p->pos;

	if (!strncmp(s, "==", 2))
		*op = OP_EQ;
	else if (!strncmp(s, "!=", 2))
		*op = OP_NE;
	else if (!strncmp(s, "~=", 2))
		*op = OP_MATCH;
	else
		return fail(p, "expected ==, != or ~=");
	p->pos += 2;
	if (strchr("=!~", p->s[p->pos]) && p->s[p->pos])
		return fail(p, "unknown operator");
	return 0;
}

static int value(struct parser *p, struct selector *sel)
{
	size_t start;

	skip_space(p);
	if (strchr("\"/|", p->s[p->pos]) && p->s[p->pos])
		return quoted(p, sel->op == OP_MATCH, &sel->value);
	start = p->pos;
	while (p->s[p->pos] && p->s[p->pos] != ',' && !isspace((unsigned char)p->s[p->pos]))
		p->pos++;
	if (p->pos == start)
		return fail(p, "expected a value");
	sel->value = strndup(p->s + start, p->pos - start);
	return sel->value ? 0 : -ENOMEM;
}

static int selector(struct parser *p, struct selector *sel)
{
	int rc = fieldpath(p, sel);

	if (rc < 0)
		return rc;
	skip_space(p);
	if (!p->s[p->pos] || p->s[p->pos] == ',') {
		sel->op = OP_PRESENT;
		return 0;
	}
	rc = operator(p, &sel->op);
	if (rc == 0)
		rc = value(p, sel);
	if (rc < 0 || sel->op != OP_MATCH)
		return rc;
	if (regcomp(&sel->re, sel->value, REG_EXTENDED | REG_NOSUB) != 0)
		return fail(p, "bad regular expression");
	sel->has_re = 1;
	return 0;
}

static void conj_free(struct conj *c)
{
	for (size_t i = 0; i < c->n; i++) {
		struct selector *s = &c->sel[i];

		for (size_t j = 0; j < s->npath; j++)
			free(s->path[j]);
		free(s->path);
		free(s->value);
		if (s->has_re)
			regfree(&s->re);
	}
	free(c->sel);
}

static int conjunction(struct parser *p, struct conj *c)
{
	for (;;) {
		struct selector *ns = realloc(c->sel, (c->n + 1) * sizeof(*ns));
		int rc;

		if (!ns)
			return -ENOMEM;
		c->sel = ns;
		memset(&c->sel[c->n], 0, sizeof(c->sel[0]));
		rc = selector(p, &c->sel[c->n]);
		c->n++;
		if (rc < 0)
			return rc;
		skip_space(p);
		if (!p->s[p->pos])
			return 0;
		if (p->s[p->pos] != ',')
			return fail(p, "expected , or the end");
		p->pos++;
	}
}

int filter_parse(char *const *exprs, size_t n, struct filter **out, struct daxfs_err *err)
{
	struct filter *f = calloc(1, sizeof(*f));
	int rc = 0;

	if (!f || (n && !(f->any = calloc(n, sizeof(*f->any))))) {
		free(f);
		return daxfs_err_set(err, -ENOMEM, "out of memory");
	}
	f->all = n == 0;
	for (size_t i = 0; i < n && rc == 0; i++) {
		struct parser p = { exprs[i], 0, exprs[i], err };

		skip_space(&p);
		if (!exprs[i][p.pos]) {
			f->all = 1;	/* "" matches everything */
			continue;
		}
		rc = conjunction(&p, &f->any[f->n++]);
	}
	if (rc < 0) {
		if (rc == -ENOMEM)
			daxfs_err_set(err, rc, "out of memory");
		filter_free(f);
		return rc;
	}
	*out = f;
	return 0;
}

static int selector_match(const struct selector *s, filter_field_fn field, void *arg)
{
	const char *v = "";
	int present = field(arg, s->path, s->npath, &v);

	if (!present)
		v = "";
	switch (s->op) {
	case OP_PRESENT:
		return present;
	case OP_EQ:
		return present && !strcmp(v, s->value);
	case OP_NE:
		return strcmp(v, s->value) != 0;
	case OP_MATCH:
		return regexec(&s->re, v, 0, NULL, 0) == 0;
	}
	return 0;
}

int filter_match(const struct filter *f, filter_field_fn field, void *arg)
{
	if (f->all)
		return 1;
	for (size_t i = 0; i < f->n; i++) {
		size_t j;

		for (j = 0; j < f->any[i].n; j++)
			if (!selector_match(&f->any[i].sel[j], field, arg))
				break;
		if (j == f->any[i].n)
			return 1;
	}
	return 0;
}

void filter_free(struct filter *f)
{
	if (!f)
		return;
	for (size_t i = 0; i < f->n; i++)
		conj_free(&f->any[i]);
	free(f->any);
	free(f);
}

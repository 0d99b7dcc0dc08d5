/* containerd filter expressions (snapshotter/filter.c): the forms the
 * snapshot test suite and containerd's metadata store send, quoting,
 * presence, !=, ~=, OR of filters, and refused syntax. */
#include <errno.h>

#include "check.h"
#include "filter.h"

struct obj {
	const char *name, *parent, *kind;
	const char *labels[4][2];
};

static int field(void *arg, char *const *path, size_t n, const char **value)
{
	const struct obj *o = arg;
	char key[256] = "";

	if (!strcmp(path[0], "name") || !strcmp(path[0], "parent")) {
		*value = path[0][0] == 'n' ? o->name : o->parent;
		return 1;
	}
	if (!strcmp(path[0], "kind"))
		return (*value = o->kind) != NULL;
	if (strcmp(path[0], "labels"))
		return 0;
	for (size_t i = 1; i < n; i++) {
		if (i > 1)
			strcat(key, ".");
		strcat(key, path[i]);
	}
	for (int i = 0; i < 4 && o->labels[i][0]; i++)
		if (!strcmp(o->labels[i][0], key)) {
			*value = o->labels[i][1];
			return 1;
		}
	return 0;
}

static const struct obj a = { "a-wl", "p-wl", "active",
			      { { "l", "2" }, { "containerd.io/gc.root", "check-walk" } } };
static const struct obj p = { "p", "", "committed",
			      { { "containerd.io/gc.root", "check-walk" },
				{ "containerd.io/snapshot.ref", "sha256:ab12" } } };

/* 1 match, 0 no match, -1 parse error. */
static int match1(const char *expr, const struct obj *o)
{
	char *e[] = { (char *)expr };
	struct daxfs_err err = { 0 };
	struct filter *f;
	int m;

	if (filter_parse(e, 1, &f, &err) < 0)
		return -1;
	m = filter_match(f, field, (void *)o);
	filter_free(f);
	return m;
}

TEST(equality)
{
	CHECK(match1("name==a-wl", &a) == 1);
	CHECK(match1("name==p", &a) == 0);
	CHECK(match1("kind==active", &a) == 1);
	CHECK(match1("kind==committed", &a) == 0);
	CHECK(match1("parent==p-wl", &a) == 1);
	CHECK(match1("labels.l==2", &a) == 1);
	CHECK(match1("labels.l==3", &a) == 0);
	CHECK(match1("  name == a-wl  ", &a) == 1);
}

TEST(quoted)
{
	CHECK(match1("labels.\"containerd.io/gc.root\"==check-walk", &a) == 1);
	CHECK(match1("labels.\"containerd.io/gc.root\"==\"check-walk\"", &a) == 1);
	CHECK(match1("name==\"a-\\x77l\"", &a) == 1);
	CHECK(match1("name==\"a-\\u0077l\"", &a) == 1);
	/* containerd's metadata store, looking for a remote snapshot */
	CHECK(match1("labels.\"containerd.io/snapshot.ref\"==sha256:ab12,parent==\"\"", &p) == 1);
	CHECK(match1("labels.\"containerd.io/snapshot.ref\"==sha256:ab12,parent==\"x\"", &p) == 0);
}

TEST(presence_and_not_equal)
{
	CHECK(match1("labels.l", &a) == 1);
	CHECK(match1("labels.l", &p) == 0);
	CHECK(match1("name==a-wl,labels.l", &a) == 1);
	CHECK(match1("parent!=\"\"", &a) == 1);
	CHECK(match1("parent!=\"\"", &p) == 0);
	CHECK(match1("labels.missing!=x", &a) == 1);
}

TEST(regexp)
{
	CHECK(match1("name~=^a-", &a) == 1);
	CHECK(match1("name~=/^a-w[l]$/", &a) == 1);
	CHECK(match1("name~=|^p$|", &a) == 0);
	CHECK(match1("name~=|^p$|", &p) == 1);
}

TEST(any_of_several)
{
	char *e[] = { "name==p", "name==a-wl" }, *none[] = { "name==zz", "kind==view" };
	char *empty[] = { "" };
	struct daxfs_err err = { 0 };
	struct filter *f;

	CHECK_RC(filter_parse(e, 2, &f, &err), 0);
	CHECK(filter_match(f, field, (void *)&a) && filter_match(f, field, (void *)&p));
	filter_free(f);
	CHECK_RC(filter_parse(none, 2, &f, &err), 0);
	CHECK(!filter_match(f, field, (void *)&a));
	filter_free(f);
	CHECK_RC(filter_parse(NULL, 0, &f, &err), 0);
	CHECK(filter_match(f, field, (void *)&a));
	filter_free(f);
	CHECK_RC(filter_parse(empty, 1, &f, &err), 0);
	CHECK(filter_match(f, field, (void *)&p));
	filter_free(f);
}

TEST(refused)
{
	static const char *const bad[] = {
		"name==", "name=a", "name===a", "==a", "name==a b", "name==\"open",
		"name==\"\\q\"", "labels.", "name==a,", "name~=/(/", "name==/re/",
	};
	char *e[1];
	struct daxfs_err err = { 0 };
	struct filter *f;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		e[0] = (char *)bad[i];
		memset(&err, 0, sizeof(err));
		if (filter_parse(e, 1, &f, &err) != -EINVAL || !strstr(err.msg, "filter")) {
			fprintf(stderr, "accepted or no message: %s\n", bad[i]);
			CHECK(0);
		}
	}
}

CHECK_MAIN_BEGIN("test_snapfilter")
	RUN(equality);
	RUN(quoted);
	RUN(presence_and_not_equal);
	RUN(regexp);
	RUN(any_of_several);
	RUN(refused);
CHECK_MAIN_END

/* Snapshot records in SQLite: see store.h.
 *
 * WAL journal with synchronous=FULL: a committed change survives a crash
 * of the daemon or the machine, an uncommitted one is rolled back on the
 * next open. */
#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"

struct store {
	sqlite3 *db;
	pthread_mutex_t lock;
};

static const char schema[] =
	"PRAGMA journal_mode=WAL;"
	"PRAGMA synchronous=FULL;"
	"PRAGMA foreign_keys=ON;"
	"CREATE TABLE IF NOT EXISTS snapshots ("
	" id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" name TEXT NOT NULL UNIQUE,"
	" parent INTEGER REFERENCES snapshots(id),"
	" kind INTEGER NOT NULL,"
	" created INTEGER NOT NULL,"
	" updated INTEGER NOT NULL,"
	" dir TEXT NOT NULL DEFAULT '',"
	" size INTEGER NOT NULL DEFAULT 0,"
	" inodes INTEGER NOT NULL DEFAULT 0,"
	" layer TEXT NOT NULL DEFAULT '');"
	"CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent);"
	"CREATE TABLE IF NOT EXISTS labels ("
	" snapshot INTEGER NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,"
	" key TEXT NOT NULL,"
	" value TEXT NOT NULL,"
	" PRIMARY KEY (snapshot, key));";

#define SELECT_INFO \
	"SELECT s.id, s.name, coalesce(p.name, ''), coalesce(s.parent, 0), s.kind," \
	" s.created, s.updated, s.dir, s.size, s.inodes, s.layer" \
	" FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent"

static int db_err(struct store *s, int rc, const char *what, struct daxfs_err *err)
{
	int e = rc == SQLITE_CONSTRAINT ? -EEXIST : rc == SQLITE_NOMEM ? -ENOMEM :
		rc == SQLITE_FULL ? -ENOSPC : -EIO;

	return daxfs_err_set(err, e, "snapshot records: %s: %s", what, sqlite3_errmsg(s->db));
}

/* Records written before the layer column existed get it, empty. */
static int add_layer_column(sqlite3 *db, char **msg)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(db, "SELECT 1 FROM pragma_table_info('snapshots')"
				    " WHERE name = 'layer'", -1, &st, NULL);

	if (rc != SQLITE_OK)
		return rc;
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc == SQLITE_ROW)
		return SQLITE_OK;
	if (rc != SQLITE_DONE)
		return rc;
	return sqlite3_exec(db, "ALTER TABLE snapshots ADD COLUMN layer TEXT NOT NULL DEFAULT ''",
			    NULL, NULL, msg);
}

int store_open(const char *path, struct store **out, struct daxfs_err *err)
{
	struct store *s = calloc(1, sizeof(*s));
	char *msg = NULL;
	int rc;

	if (!s)
		return daxfs_err_set(err, -ENOMEM, "out of memory");
	rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
			     SQLITE_OPEN_NOMUTEX, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_busy_timeout(s->db, 10000);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(s->db, schema, NULL, NULL, &msg);
	if (rc == SQLITE_OK)
		rc = add_layer_column(s->db, &msg);
	if (rc != SQLITE_OK) {
		rc = daxfs_err_set(err, -EIO, "open %s: %s", path,
				   msg ? msg : s->db ? sqlite3_errmsg(s->db) : "out of memory");
		sqlite3_free(msg);
		sqlite3_close(s->db);
		free(s);
		return rc;
	}
	pthread_mutex_init(&s->lock, NULL);
	*out = s;
	return 0;
}

void store_close(struct store *s)
{
	if (!s)
		return;
	sqlite3_close(s->db);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

int store_begin(struct store *s, struct daxfs_err *err)
{
	int rc;

	pthread_mutex_lock(&s->lock);
	rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	if (rc == SQLITE_OK)
		return 0;
	rc = db_err(s, rc, "begin", err);
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int store_end(struct store *s, int rc, struct daxfs_err *err)
{
	if (rc == 0) {
		int e = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);

		if (e != SQLITE_OK)
			rc = db_err(s, e, "commit", err);
	}
	if (rc < 0 && sqlite3_get_autocommit(s->db) == 0)
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
	pthread_mutex_unlock(&s->lock);
	return rc;
}

static int prepare(struct store *s, const char *sql, sqlite3_stmt **st, struct daxfs_err *err)
{
	int rc = sqlite3_prepare_v2(s->db, sql, -1, st, NULL);

	return rc == SQLITE_OK ? 0 : db_err(s, rc, "prepare", err);
}

/* ---- labels ---- */

static int label_find(const struct snap_info *i, const char *key, size_t *at)
{
	size_t lo = 0, hi = i->nlabels;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = strcmp(i->labels[mid].key, key);

		if (c == 0) {
			*at = mid;
			return 1;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*at = lo;
	return 0;
}

const char *snap_label_get(const struct snap_info *i, const char *key)
{
	size_t at;

	return label_find(i, key, &at) ? i->labels[at].value : NULL;
}

int snap_label_set(struct snap_info *i, const char *key, const char *value)
{
	struct snap_label *nl;
	size_t at;
	char *k, *v;

	if (label_find(i, key, &at)) {
		if (!value || !value[0]) {
			free(i->labels[at].key);
			free(i->labels[at].value);
			memmove(&i->labels[at], &i->labels[at + 1],
				(i->nlabels - at - 1) * sizeof(*nl));
			i->nlabels--;
			return 0;
		}
		v = strdup(value);
		if (!v)
			return -ENOMEM;
		free(i->labels[at].value);
		i->labels[at].value = v;
		return 0;
	}
	if (!value || !value[0])
		return 0;
	nl = realloc(i->labels, (i->nlabels + 1) * sizeof(*nl));
	if (!nl)
		return -ENOMEM;
	i->labels = nl;
	k = strdup(key);
	v = strdup(value);
	if (!k || !v) {
		free(k);
		free(v);
		return -ENOMEM;
	}
	memmove(&nl[at + 1], &nl[at], (i->nlabels - at) * sizeof(*nl));
	nl[at] = (struct snap_label){ k, v };
	i->nlabels++;
	return 0;
}

void snap_info_free(struct snap_info *i)
{
	if (!i)
		return;
	for (size_t j = 0; j < i->nlabels; j++) {
		free(i->labels[j].key);
		free(i->labels[j].value);
	}
	free(i->labels);
	free(i->name);
	free(i->parent);
	free(i->dir);
	free(i->layer);
	memset(i, 0, sizeof(*i));
}

static int load_labels(struct store *s, struct snap_info *i, struct daxfs_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s, "SELECT key, value FROM labels WHERE snapshot = ?", &st, err);

	if (rc < 0)
		return rc;
	sqlite3_bind_int64(st, 1, i->id);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		if (snap_label_set(i, (const char *)sqlite3_column_text(st, 0),
				   (const char *)sqlite3_column_text(st, 1)) < 0) {
			rc = SQLITE_NOMEM;
			break;
		}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : db_err(s, rc, "read labels", err);
}

static int save_labels(struct store *s, const struct snap_info *i, struct daxfs_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s, "DELETE FROM labels WHERE snapshot = ?", &st, err);

	if (rc < 0)
		return rc;
	sqlite3_bind_int64(st, 1, i->id);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return db_err(s, rc, "write labels", err);
	rc = prepare(s, "INSERT INTO labels (snapshot, key, value) VALUES (?, ?, ?)", &st, err);
	if (rc < 0)
		return rc;
	for (size_t j = 0; j < i->nlabels && rc == 0; j++) {
		sqlite3_reset(st);
		sqlite3_bind_int64(st, 1, i->id);
		sqlite3_bind_text(st, 2, i->labels[j].key, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 3, i->labels[j].value, -1, SQLITE_STATIC);
		if (sqlite3_step(st) != SQLITE_DONE)
			rc = db_err(s, sqlite3_errcode(s->db), "write labels", err);
	}
	sqlite3_finalize(st);
	return rc;
}

/* ---- rows ---- */

static char *column_dup(sqlite3_stmt *st, int col)
{
	const unsigned char *t = sqlite3_column_text(st, col);

	return strdup(t ? (const char *)t : "");
}

static int row_info(sqlite3_stmt *st, struct snap_info *i)
{
	memset(i, 0, sizeof(*i));
	i->id = sqlite3_column_int64(st, 0);
	i->name = column_dup(st, 1);
	i->parent = column_dup(st, 2);
	i->parent_id = sqlite3_column_int64(st, 3);
	i->kind = sqlite3_column_int(st, 4);
	i->created_ns = sqlite3_column_int64(st, 5);
	i->updated_ns = sqlite3_column_int64(st, 6);
	i->dir = column_dup(st, 7);
	i->size = sqlite3_column_int64(st, 8);
	i->inodes = sqlite3_column_int64(st, 9);
	i->layer = column_dup(st, 10);
	if (!i->name || !i->parent || !i->dir || !i->layer) {
		snap_info_free(i);
		return -ENOMEM;
	}
	return 0;
}

/* One row of SELECT_INFO with its labels, from a statement bound by the
 * caller. */
static int get_one(struct store *s, sqlite3_stmt *st, struct snap_info *out,
		   struct daxfs_err *err)
{
	int rc = sqlite3_step(st);

	if (rc == SQLITE_DONE)
		rc = -ENOENT;
	else if (rc != SQLITE_ROW)
		rc = db_err(s, rc, "read", err);
	else if (row_info(st, out) < 0)
		rc = daxfs_err_set(err, -ENOMEM, "out of memory");
	else
		rc = 0;
	sqlite3_finalize(st);
	if (rc == 0) {
		rc = load_labels(s, out, err);
		if (rc < 0)
			snap_info_free(out);
	}
	return rc;
}

int store_get(struct store *s, const char *name, struct snap_info *out, struct daxfs_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s, SELECT_INFO " WHERE s.name = ?", &st, err);

	if (rc < 0)
		return rc;
	sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
	rc = get_one(s, st, out, err);
	if (rc == -ENOENT)
		daxfs_err_set(err, rc, "snapshot %s does not exist", name);
	return rc;
}

int store_get_id(struct store *s, int64_t id, struct snap_info *out, struct daxfs_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s, SELECT_INFO " WHERE s.id = ?", &st, err);

	if (rc < 0)
		return rc;
	sqlite3_bind_int64(st, 1, id);
	rc = get_one(s, st, out, err);
	if (rc == -ENOENT)
		daxfs_err_set(err, rc, "snapshot #%lld does not exist", (long long)id);
	return rc;
}

int store_insert(struct store *s, struct snap_info *i, struct daxfs_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s, "INSERT INTO snapshots (name, parent, kind, created, updated, dir,"
			 " size, inodes, layer) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", &st, err);

	if (rc < 0)
		return rc;
	sqlite3_bind_text(st, 1, i->name, -1, SQLITE_STATIC);
	if (i->parent_id)
		sqlite3_bind_int64(st, 2, i->parent_id);
	else
		sqlite3_bind_null(st, 2);
	sqlite3_bind_int(st, 3, i->kind);
	sqlite3_bind_int64(st, 4, i->created_ns);
	sqlite3_bind_int64(st, 5, i->updated_ns);
	sqlite3_bind_text(st, 6, i->dir ? i->dir : "", -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 7, i->size);
	sqlite3_bind_int64(st, 8, i->inodes);
	sqlite3_bind_text(st, 9, i->layer ? i->layer : "", -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc == SQLITE_CONSTRAINT)
		return daxfs_err_set(err, -EEXIST, "snapshot %s already exists", i->name);
	if (rc != SQLITE_DONE)
		return db_err(s, rc, "insert", err);
	i->id = sqlite3_last_insert_rowid(s->db);
	return save_labels(s, i, err);
}

int store_update(struct store *s, const struct snap_info *i, struct daxfs_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s, "UPDATE snapshots SET name = ?, kind = ?, created = ?, updated = ?,"
			 " size = ?, inodes = ? WHERE id = ?", &st, err);

	if (rc < 0)
		return rc;
	sqlite3_bind_text(st, 1, i->name, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, i->kind);
	sqlite3_bind_int64(st, 3, i->created_ns);
	sqlite3_bind_int64(st, 4, i->updated_ns);
	sqlite3_bind_int64(st, 5, i->size);
	sqlite3_bind_int64(st, 6, i->inodes);
	sqlite3_bind_int64(st, 7, i->id);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc == SQLITE_CONSTRAINT)
		return daxfs_err_set(err, -EEXIST, "snapshot %s already exists", i->name);
	if (rc != SQLITE_DONE)
		return db_err(s, rc, "update", err);
	return save_labels(s, i, err);
}

static int exec_id(struct store *s, const char *sql, int64_t id, const char *what,
		   struct daxfs_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s, sql, &st, err);

	if (rc < 0)
		return rc;
	sqlite3_bind_int64(st, 1, id);
	rc = sqlite3_step(st);
	sqlite3_finalize(st);
	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE)
		return 0;
	return db_err(s, rc, what, err);
}

int store_delete(struct store *s, int64_t id, struct daxfs_err *err)
{
	int rc = exec_id(s, "DELETE FROM snapshots WHERE id = ?", id, "delete", err);

	return rc < 0 ? rc : 0;
}

int store_has_children(struct store *s, int64_t id, struct daxfs_err *err)
{
	return exec_id(s, "SELECT 1 FROM snapshots WHERE parent = ? LIMIT 1", id, "read", err);
}

int store_foreach(struct store *s, int (*cb)(struct snap_info *, void *), void *arg,
		  struct daxfs_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s, SELECT_INFO " ORDER BY s.id", &st, err);

	if (rc < 0)
		return rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct snap_info i;
		int r = row_info(st, &i);

		if (r == 0)
			r = load_labels(s, &i, err);
		else
			daxfs_err_set(err, r, "out of memory");
		if (r == 0)
			r = cb(&i, arg);
		snap_info_free(&i);
		if (r != 0) {
			sqlite3_finalize(st);
			return r;
		}
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : db_err(s, rc, "read", err);
}

int store_last_id(struct store *s, int64_t *id, struct daxfs_err *err)
{
	sqlite3_stmt *st;
	int rc = prepare(s, "SELECT seq FROM sqlite_sequence WHERE name = 'snapshots'", &st, err);

	if (rc < 0)
		return rc;
	rc = sqlite3_step(st);
	*id = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
	sqlite3_finalize(st);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : db_err(s, rc, "read", err);
}

struct sqlite3 *store_sqlite(struct store *s)
{
	return s->db;
}

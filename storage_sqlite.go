package passwordless

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	_ "modernc.org/sqlite" // pure Go: builds without cgo
)

// sqliteHandles shares one database handle per file across handler
// instances and config reloads; the last user to go closes it.
var sqliteHandles = caddy.NewUsagePool()

// sqliteStore is the default Store: one local file, for one Caddy instance.
type sqliteStore struct {
	*sqlStore
	path            string
	stopCheckpoints chan struct{}
	ck              *sql.DB // the checkpoints' own connection
	checkpointsDone chan struct{}
	// scrub is signalled when messages, and the codes they carried in
	// clear, were deleted: the next checkpoint truncates the log.
	scrub chan struct{}
}

// openSQLite returns the shared store for path, opening it on first use.
// Release it with releaseSQLite.
func openSQLite(path string) (*sqliteStore, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite path %q: %w", path, err)
	}
	return openShared(sqliteHandles, abs, func() (*sqliteStore, error) { return newSQLite(abs) })
}

func releaseSQLite(s *sqliteStore) error {
	_, err := sqliteHandles.Delete(s.path)
	return err
}

func newSQLite(path string) (*sqliteStore, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating directory for %s: %w", path, err)
	}
	if err := ownerOnly(path); err != nil {
		return nil, err
	}
	// WAL lets readers go on while the writer writes. All writes go
	// through one connection behind a first-come, first-served gate, so
	// they never meet SQLite's busy handler, which sleeps and retries and
	// so made the long tails; reads have a pool of their own. The busy
	// timeout is left for another process on the file, such as the
	// command line. IMMEDIATE transactions take the write lock up front.
	dsn := func(extra ...string) string {
		q := url.Values{}
		q.Add("_pragma", "busy_timeout(10000)")
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "synchronous(NORMAL)")
		q.Add("_pragma", "foreign_keys(ON)")
		// Deleted rows are overwritten with zeros, not left in free
		// space: a sent code must not outlive its message in the file.
		q.Add("_pragma", "secure_delete(ON)")
		for _, p := range extra {
			q.Add("_pragma", p)
		}
		q.Set("_txlock", "immediate")
		return "file:" + path + "?" + q.Encode()
	}
	// The writer does not checkpoint in its commits (a checkpoint syncs the
	// file, and would stall the request whose commit it was and every
	// writer queued behind it); checkpoints() does, between writes.
	// A batch of writes (writeBatch) keeps each in a savepoint, whose
	// journal of page images stays in memory, not in a temporary file.
	db, err := sql.Open("sqlite", dsn("wal_autocheckpoint(0)", "journal_size_limit(67108864)", "temp_store(MEMORY)"))
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxIdleTime(0)
	if err := migrateSQLite(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("preparing %s: %w", path, err)
	}
	rdb, err := sql.Open("sqlite", dsn("query_only(1)"))
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	rdb.SetMaxOpenConns(readConns)
	rdb.SetMaxIdleConns(readConns)
	ck, err := sql.Open("sqlite", dsn("wal_autocheckpoint(0)"))
	if err != nil {
		db.Close()
		rdb.Close()
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	ck.SetMaxOpenConns(1)
	noLock := func(context.Context, sqlTx, string) error { return nil }
	w := sqlDB{DB: db, gate: make(chan struct{}, 1), cache: newStmtCache(), batch: &writeBatch{}}
	r := sqlDB{DB: rdb, cache: newStmtCache()}
	s := &sqliteStore{sqlStore: newSQLStore(w, r, path, noLock), path: path,
		stopCheckpoints: make(chan struct{}), checkpointsDone: make(chan struct{}), scrub: make(chan struct{}, 1), ck: ck}
	s.purgeInBackground()
	go s.checkpoints()
	return s, nil
}

// openSQLiteClient opens the store at path as the command line uses it,
// a client beside the server: the file must be a store already, at the
// schema version of this build (only a server migrates), and nothing runs
// in the background: no purge, no checkpoints, none at exit either. It
// answers the absolute path, for messages.
func openSQLiteClient(ctx context.Context, path string) (*sqlStore, string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, "", fmt.Errorf("sqlite path %q: %w", path, err)
	}
	exists, err := isSQLite(abs)
	if err != nil {
		return nil, abs, err
	}
	if !exists {
		return nil, abs, fmt.Errorf("no database at %s: Caddy creates it when it first runs with this config (is --config right?)", abs)
	}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "foreign_keys(ON)")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+abs+"?"+q.Encode())
	if err != nil {
		return nil, abs, fmt.Errorf("opening %s: %w", abs, err)
	}
	db.SetMaxOpenConns(1)
	var version int
	if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		db.Close()
		return nil, abs, fmt.Errorf("reading %s: %w", abs, err)
	}
	if version == 0 {
		db.Close()
		return nil, abs, fmt.Errorf("%s is a SQLite database but not a passwordless store", abs)
	}
	if err := sameSchema(abs, version, len(sqliteMigrations)); err != nil {
		db.Close()
		return nil, abs, err
	}
	w := sqlDB{DB: db, gate: make(chan struct{}, 1), cache: newStmtCache()}
	noLock := func(context.Context, sqlTx, string) error { return nil }
	return newSQLStore(w, w, abs, noLock), abs, nil
}

// sqliteHeader begins every SQLite database file.
const sqliteHeader = "SQLite format 3\x00"

// isSQLite reports whether path holds a SQLite database, false if there
// is no file, and fails for anything else: an empty file, a text file or
// a device is not a store, and neither the server nor the command line
// may turn one into a store or change its mode.
func isSQLite(path string) (bool, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("database %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("database %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return false, fmt.Errorf("database %s is not a file", path)
	}
	head := make([]byte, len(sqliteHeader))
	if _, err := io.ReadFull(f, head); err != nil || string(head) != sqliteHeader {
		return false, fmt.Errorf("%s is not a SQLite database: refusing to use it as the store (an empty file is not one either)", path)
	}
	return true, nil
}

// sameSchema refuses a store at another schema version than this build's:
// the command line never migrates.
func sameSchema(where string, version, want int) error {
	if version != want {
		return fmt.Errorf("the store %s is at schema version %d and this build uses version %d: only caddy run migrates a store; use the caddy that matches it", where, version, want)
	}
	return nil
}

// checkpointEvery is how often the log is copied into the database file.
// Often and small (a few hundred pages at full load) keeps each copy and
// its syncs short. With nothing to copy it costs next to nothing.
const checkpointEvery = 25 * time.Millisecond

// scrubEvery is the least time between two checkpoints that truncate the
// log; under steady delivery the log is truncated that often.
const scrubEvery = 250 * time.Millisecond

// checkpoints copies the log into the database file every
// checkpointEvery, on a connection of its own beside the writer: a passive
// checkpoint never waits for the writer nor makes it wait, where taking
// its turn at the gate held every writer for its copy and two syncs,
// 5 ms in every 25 at full load, a fifth of the writer's time. (An
// earlier try of this saw writers stall 100 ms now and then; with writes
// batched (writeBatch), bench/logins.sh's 8-client p99 of exchanges was
// lower than with the gate, and the 64-client one within a few ms of it.) After messages were deleted it truncates the
// log as well, holding the gate for that: its frames still hold the codes
// the messages carried in clear, and anyone with a copy of the files
// could read them there; secure_delete only clears the database file's
// own pages.
func (s *sqliteStore) checkpoints() {
	defer close(s.checkpointsDone)
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	var lastScrub time.Time
	scrub := false
	var failed repeatedFailure
	for {
		select {
		case <-s.stopCheckpoints:
			return
		case <-t.C:
		}
		select {
		case <-s.scrub:
			scrub = true
		default:
		}
		var err error
		if scrub && time.Since(lastScrub) >= scrubEvery {
			var done bool
			done, err = s.truncateLog()
			if done {
				scrub, lastScrub = false, time.Now()
			}
		} else {
			_, err = s.ck.ExecContext(context.Background(), `PRAGMA wal_checkpoint(PASSIVE)`)
		}
		if err != nil || failed.failing() {
			// The logger of the moment: the store outlives config
			// reloads, and a reload may replace Caddy's default logger.
			failed.observe(caddy.Log().Named("http.handlers.passwordless"), zapcore.ErrorLevel,
				"sqlite checkpoint", err, time.Now(), zap.String("store", s.path))
		}
	}
}

// truncateLog copies the whole log into the database file and truncates
// it to nothing. It reports false when a reader kept it from that; the
// next tick tries again. It waits at most a few milliseconds for readers,
// holding the gate, so that writers never queue behind a long read.
func (s *sqliteStore) truncateLog() (bool, error) {
	ctx := context.Background()
	h, err := s.db.enter(ctx)
	if err != nil {
		return false, err
	}
	defer h.leave()
	if _, err := s.db.DB.ExecContext(ctx, `PRAGMA busy_timeout = 5`); err != nil {
		return false, err
	}
	var busy, frames, copied int
	err = s.db.DB.QueryRowContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &frames, &copied)
	if _, rerr := s.db.DB.ExecContext(ctx, `PRAGMA busy_timeout = 10000`); rerr != nil && err == nil {
		err = rerr
	}
	return err == nil && busy == 0, err
}

// FinishOutbox deletes the messages, then has the log truncated soon.
func (s *sqliteStore) FinishOutbox(ctx context.Context, ids []string) error {
	if err := s.sqlStore.FinishOutbox(ctx, ids); err != nil || len(ids) == 0 {
		return err
	}
	select {
	case s.scrub <- struct{}{}:
	default:
	}
	return nil
}

// Destruct stops the checkpoints and closes the database; a last
// checkpoint leaves the file whole.
func (s *sqliteStore) Destruct() error {
	close(s.stopCheckpoints)
	<-s.checkpointsDone
	s.ck.Close()
	s.db.ExecContext(context.Background(), `PRAGMA wal_checkpoint(TRUNCATE)`)
	return s.sqlStore.Destruct()
}

// readConns bounds the SQLite read pool: more than the cores would only
// queue inside SQLite.
var readConns = max(runtime.NumCPU(), 2) * 2

// ownerOnly makes the database owner-only before SQLite opens it. The
// file, and its -wal and -shm companions until a checkpoint, hold the
// signing key and the code HMAC key. SQLite gives -wal and -shm the mode of
// the main file, so creating that with 0600 covers all three; companions
// left by an older version with the umask's mode are repaired. Only a new
// file or a SQLite one is touched: a path to anything else (a typo, a
// text file) is refused before its mode or contents change.
func ownerOnly(path string) error {
	exists, err := isSQLite(path)
	if err != nil {
		return err
	}
	if !exists {
		// Not O_EXCL: a symlink to a file still to be made is followed,
		// as SQLite follows it. What was opened must be the new, empty
		// file; anything another process put there meanwhile is checked
		// as above before its mode changes.
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("creating %s: %w", path, err)
		}
		fi, err := f.Stat()
		f.Close()
		if err != nil {
			return fmt.Errorf("creating %s: %w", path, err)
		}
		if fi.Size() > 0 || !fi.Mode().IsRegular() {
			if _, err := isSQLite(path); err != nil {
				return err
			}
		}
	}
	for _, name := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Chmod(name, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("restricting %s to its owner: %w", name, err)
		}
	}
	return nil
}

// migrations are applied in order, each once; user_version records how far.
var sqliteMigrations = []string{
	schemaV1("BLOB", "INTEGER"),
	schemaAccess(false),
	schemaOutbox("BLOB", "INTEGER", " WITHOUT ROWID"),
	schemaPasskeys("BLOB", "INTEGER"),
	schemaOutboxLang,
	schemaSQLiteNoRowID,
}

// schemaSQLiteNoRowID rebuilds the tables keyed by text or bytes as
// WITHOUT ROWID tables, as the outbox and rate_limits already are: such a
// table is one B-tree instead of a table and the index of its key, so a
// sign-in's inserts and deletes write three or four fewer pages to the log,
// and every write transaction's cost on SQLite is mostly its pages. The
// rebuild follows SQLite's documented procedure, with foreign keys off
// (migrateSQLite): create the new table, copy the rows, drop the old one,
// rename, and create its indexes again. Rows are copied in key order, so
// that each new B-tree is filled from one end, not page by page at random
// places. The columns are those the earlier migrations left, in the same
// order. The alias indexes leave out the users without that kind of alias
// (most have one kind): a new user is one index entry fewer, and a lookup
// `email = ?` still uses the index, as SQLite knows that it implies
// `email IS NOT NULL`.
const schemaSQLiteNoRowID = `CREATE TABLE secrets_new (
		name TEXT PRIMARY KEY,
		value BLOB NOT NULL
	) WITHOUT ROWID;
	INSERT INTO secrets_new (name, value) SELECT name, value FROM secrets ORDER BY name;
	DROP TABLE secrets;
	ALTER TABLE secrets_new RENAME TO secrets;

	CREATE TABLE users_new (
		id TEXT PRIMARY KEY,
		realm TEXT NOT NULL DEFAULT 'default',
		email TEXT,
		mobile TEXT,
		email_verified BOOLEAN NOT NULL DEFAULT FALSE,
		mobile_verified BOOLEAN NOT NULL DEFAULT FALSE,
		roles TEXT NOT NULL DEFAULT '',
		disabled BOOLEAN NOT NULL DEFAULT FALSE,
		created_at INTEGER NOT NULL,
		last_login INTEGER NOT NULL DEFAULT 0
	) WITHOUT ROWID;
	INSERT INTO users_new (id, realm, email, mobile, email_verified, mobile_verified, roles, disabled, created_at, last_login)
		SELECT id, realm, email, mobile, email_verified, mobile_verified, roles, disabled, created_at, last_login FROM users ORDER BY id;
	DROP TABLE users;
	ALTER TABLE users_new RENAME TO users;
	CREATE UNIQUE INDEX users_realm_email ON users(realm, email) WHERE email IS NOT NULL;
	CREATE UNIQUE INDEX users_realm_mobile ON users(realm, mobile) WHERE mobile IS NOT NULL;

	CREATE TABLE codes_new (
		alias TEXT NOT NULL,
		purpose TEXT NOT NULL,
		id TEXT NOT NULL UNIQUE,
		user_id TEXT NOT NULL DEFAULT '',
		hash BLOB NOT NULL,
		attempts INTEGER NOT NULL DEFAULT 0,
		expires_at INTEGER NOT NULL,
		created_at INTEGER NOT NULL,
		PRIMARY KEY (alias, purpose)
	) WITHOUT ROWID;
	INSERT INTO codes_new (alias, purpose, id, user_id, hash, attempts, expires_at, created_at)
		SELECT alias, purpose, id, user_id, hash, attempts, expires_at, created_at FROM codes ORDER BY alias, purpose;
	DROP TABLE codes;
	ALTER TABLE codes_new RENAME TO codes;

	CREATE TABLE sessions_new (
		id TEXT PRIMARY KEY,
		user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
		created_at INTEGER NOT NULL,
		expires_at INTEGER NOT NULL,
		revoked BOOLEAN NOT NULL DEFAULT FALSE,
		client_ip TEXT NOT NULL DEFAULT '',
		last_used INTEGER NOT NULL DEFAULT 0
	) WITHOUT ROWID;
	INSERT INTO sessions_new (id, user_id, created_at, expires_at, revoked, client_ip, last_used)
		SELECT id, user_id, created_at, expires_at, revoked, client_ip, last_used FROM sessions ORDER BY id;
	DROP TABLE sessions;
	ALTER TABLE sessions_new RENAME TO sessions;
	CREATE INDEX sessions_user ON sessions(user_id);

	CREATE TABLE refresh_tokens_new (
		hash BLOB PRIMARY KEY,
		session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
		expires_at INTEGER NOT NULL,
		used BOOLEAN NOT NULL DEFAULT FALSE
	) WITHOUT ROWID;
	INSERT INTO refresh_tokens_new (hash, session_id, expires_at, used)
		SELECT hash, session_id, expires_at, used FROM refresh_tokens ORDER BY hash;
	DROP TABLE refresh_tokens;
	ALTER TABLE refresh_tokens_new RENAME TO refresh_tokens;
	CREATE INDEX refresh_tokens_session ON refresh_tokens(session_id);

	CREATE TABLE failures_new (
		alias TEXT PRIMARY KEY,
		count INTEGER NOT NULL,
		locked_until INTEGER NOT NULL DEFAULT 0
	) WITHOUT ROWID;
	INSERT INTO failures_new (alias, count, locked_until) SELECT alias, count, locked_until FROM failures ORDER BY alias;
	DROP TABLE failures;
	ALTER TABLE failures_new RENAME TO failures;

	CREATE TABLE passkeys_new (
		realm TEXT NOT NULL,
		id BLOB NOT NULL,
		user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
		public_key BLOB NOT NULL,
		sign_count INTEGER NOT NULL DEFAULT 0,
		aaguid BLOB NOT NULL,
		transports TEXT NOT NULL DEFAULT '',
		backup_eligible BOOLEAN NOT NULL DEFAULT FALSE,
		backup_state BOOLEAN NOT NULL DEFAULT FALSE,
		name TEXT NOT NULL,
		created_at INTEGER NOT NULL,
		last_used_at INTEGER NOT NULL DEFAULT 0,
		PRIMARY KEY (realm, id)
	) WITHOUT ROWID;
	INSERT INTO passkeys_new (realm, id, user_id, public_key, sign_count, aaguid, transports, backup_eligible, backup_state, name, created_at, last_used_at)
		SELECT realm, id, user_id, public_key, sign_count, aaguid, transports, backup_eligible, backup_state, name, created_at, last_used_at FROM passkeys ORDER BY realm, id;
	DROP TABLE passkeys;
	ALTER TABLE passkeys_new RENAME TO passkeys;
	CREATE INDEX passkeys_user ON passkeys(user_id);

	CREATE TABLE passkey_ceremonies_new (
		challenge_hash BLOB PRIMARY KEY,
		kind TEXT NOT NULL,
		realm TEXT NOT NULL,
		session_id TEXT NOT NULL DEFAULT '',
		user_id TEXT NOT NULL DEFAULT '',
		name TEXT NOT NULL DEFAULT '',
		data BLOB,
		expires_at INTEGER NOT NULL
	) WITHOUT ROWID;
	INSERT INTO passkey_ceremonies_new (challenge_hash, kind, realm, session_id, user_id, name, data, expires_at)
		SELECT challenge_hash, kind, realm, session_id, user_id, name, data, expires_at FROM passkey_ceremonies ORDER BY challenge_hash;
	DROP TABLE passkey_ceremonies;
	ALTER TABLE passkey_ceremonies_new RENAME TO passkey_ceremonies;
	CREATE INDEX passkey_ceremonies_expiry ON passkey_ceremonies(expires_at);`

func migrateSQLite(db *sql.DB) (err error) {
	ctx := context.Background()
	// A migration that rebuilds a table needs foreign keys off, which
	// SQLite only lets a connection change outside a transaction.
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `PRAGMA foreign_keys = OFF`); err != nil {
		return err
	}
	// A migration that copies tables reads and writes every page of them
	// in one transaction: with SQLite's default 2 MiB of cache, a store of
	// 200,000 users took twice as long. The cache only grows as pages are
	// used, and goes back to the default afterwards.
	if _, err := conn.ExecContext(ctx, `PRAGMA cache_size = -262144`); err != nil {
		return err
	}
	// This connection is the store's one writer from now on: without
	// foreign keys, deleting a user would leave its sessions behind.
	defer func() {
		if _, ferr := conn.ExecContext(ctx, `PRAGMA foreign_keys = ON`); ferr != nil && err == nil {
			err = fmt.Errorf("turning foreign keys back on: %w", ferr)
		}
		if _, cerr := conn.ExecContext(ctx, `PRAGMA cache_size = -2000`); cerr != nil && err == nil {
			err = fmt.Errorf("restoring the page cache size: %w", cerr)
		}
	}()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var version int
	if err := tx.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		return err
	}
	if version > len(sqliteMigrations) {
		return fmt.Errorf("database schema version %d is newer than this build knows (%d)", version, len(sqliteMigrations))
	}
	for i := version; i < len(sqliteMigrations); i++ {
		if _, err := tx.ExecContext(ctx, sqliteMigrations[i]); err != nil {
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, len(sqliteMigrations))); err != nil {
		return err
	}
	var broken int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM pragma_foreign_key_check`).Scan(&broken); err != nil {
		return err
	}
	if broken > 0 {
		return fmt.Errorf("the migration left %d rows with broken foreign keys", broken)
	}
	return tx.Commit()
}

// Interface guards
var (
	_ Store            = (*sqliteStore)(nil)
	_ caddy.Destructor = (*sqliteStore)(nil)
)

package passwordless

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// sqlStore is the Store on a SQL database: SQLite and PostgreSQL share it.
// Queries are written with ? placeholders and TRUE/FALSE, which both
// understand once placeholders are rebound for PostgreSQL.
type sqlStore struct {
	db sqlDB // writes, and reads inside them
	// rdb is for reads that stand alone. On SQLite it is a pool of its own
	// beside the one writer connection, so reads never queue behind writes.
	rdb sqlDB
	// dialect: MAX or GREATEST for the larger of two values, and what
	// makes concurrent claims of queued messages skip each other's rows.
	greatest, skipLocked string
	// lock serialises a transaction against others on the same key. SQLite
	// needs nothing (IMMEDIATE transactions take the write lock); PostgreSQL
	// takes a transaction-scoped advisory lock.
	lock func(ctx context.Context, tx sqlTx, key string) error
	name string // for logs: the file, or the database without credentials
	stop chan struct{}
	done chan struct{}
	// purged is closed once the first purge has run. Tests that write
	// rows the purge deletes (revoked sessions) wait for it, so that the
	// purge of a freshly opened store cannot land between their steps.
	purged chan struct{}
}

func newSQLStore(db, rdb sqlDB, name string, lock func(context.Context, sqlTx, string) error) *sqlStore {
	s := &sqlStore{db: db, rdb: rdb, lock: lock, name: name, greatest: "MAX"}
	if db.dollar {
		s.greatest, s.skipLocked = "GREATEST", " FOR UPDATE SKIP LOCKED"
	}
	return s
}

// purgeInBackground starts purgeLoop. A server does; the command line,
// a client of the store for a moment, does not.
func (s *sqlStore) purgeInBackground() {
	s.stop, s.done, s.purged = make(chan struct{}), make(chan struct{}), make(chan struct{})
	go s.purgeLoop()
}

// Destruct closes the database when the usage pool drops the last reference.
func (s *sqlStore) Destruct() error {
	if s.stop != nil {
		close(s.stop)
		<-s.done
	}
	if s.rdb.DB != s.db.DB {
		s.rdb.Close()
	}
	return s.db.Close()
}

// purgeLoop runs Purge now and every purgeEvery until the store closes.
func (s *sqlStore) purgeLoop() {
	defer close(s.done)
	t := time.NewTicker(purgeEvery)
	defer t.Stop()
	for first := true; ; first = false {
		if err := s.Purge(context.Background(), now()); err != nil {
			caddy.Log().Named("http.handlers.passwordless").Error("purging storage", zap.String("store", s.name), zap.Error(err))
		}
		if first {
			close(s.purged)
		}
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}

// schemaV1 is the first schema, in the column types of one engine: blob
// for byte strings, bigint for Unix milliseconds.
func schemaV1(blob, bigint string) string {
	return strings.NewReplacer("BLOB", blob, "BIGINT", bigint).Replace(`CREATE TABLE secrets (
		name TEXT PRIMARY KEY,
		value BLOB NOT NULL
	);
	CREATE TABLE users (
		id TEXT PRIMARY KEY,
		email TEXT UNIQUE,
		mobile TEXT UNIQUE,
		email_verified BOOLEAN NOT NULL DEFAULT FALSE,
		mobile_verified BOOLEAN NOT NULL DEFAULT FALSE,
		created_at BIGINT NOT NULL
	);
	CREATE TABLE codes (
		alias TEXT NOT NULL,
		purpose TEXT NOT NULL,
		id TEXT NOT NULL UNIQUE,
		user_id TEXT NOT NULL DEFAULT '',
		hash BLOB NOT NULL,
		attempts INTEGER NOT NULL DEFAULT 0,
		expires_at BIGINT NOT NULL,
		created_at BIGINT NOT NULL,
		PRIMARY KEY (alias, purpose)
	);
	CREATE TABLE sessions (
		id TEXT PRIMARY KEY,
		user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
		created_at BIGINT NOT NULL,
		expires_at BIGINT NOT NULL,
		revoked BOOLEAN NOT NULL DEFAULT FALSE
	);
	CREATE TABLE refresh_tokens (
		hash BLOB PRIMARY KEY,
		session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
		expires_at BIGINT NOT NULL,
		used BOOLEAN NOT NULL DEFAULT FALSE
	);
	CREATE INDEX refresh_tokens_session ON refresh_tokens(session_id);
	CREATE TABLE rate_events (
		key TEXT NOT NULL,
		at BIGINT NOT NULL
	);
	CREATE INDEX rate_events_key_at ON rate_events(key, at);
	CREATE TABLE failures (
		alias TEXT PRIMARY KEY,
		count INTEGER NOT NULL,
		locked_until BIGINT NOT NULL DEFAULT 0
	);`)
}

// schemaOutboxLang keeps with each queued message the language of the
// request that asked for it; messages queued before it are in English.
const schemaOutboxLang = `ALTER TABLE outbox ADD COLUMN lang TEXT NOT NULL DEFAULT ''`

// schemaOutbox adds the outbox, where code messages wait for delivery, and
// replaces rate_events (a row per event, so a check cost more the more its
// window held) with one GCRA state per key: its theoretical arrival time,
// in Unix microseconds. noRowID is " WITHOUT ROWID" on SQLite: a table
// keyed by text is then one B-tree, not a table and an index, and each
// write touches half the pages.
func schemaOutbox(blob, bigint, noRowID string) string {
	return strings.NewReplacer("BLOB", blob, "BIGINT", bigint, " NOROWID", noRowID).Replace(`CREATE TABLE outbox (
		id TEXT PRIMARY KEY,
		queue TEXT NOT NULL,
		channel TEXT NOT NULL,
		recipient TEXT NOT NULL,
		purpose TEXT NOT NULL,
		code TEXT NOT NULL,
		deliver BOOLEAN NOT NULL,
		attempts INTEGER NOT NULL DEFAULT 0,
		next_at BIGINT NOT NULL,
		expires_at BIGINT NOT NULL,
		created_at BIGINT NOT NULL
	) NOROWID;
	CREATE INDEX outbox_due ON outbox(queue, next_at);
	CREATE TABLE rate_limits (
		key TEXT PRIMARY KEY,
		tat BIGINT NOT NULL
	) NOROWID;
	DROP TABLE rate_events;`)
}

// schemaAccess is the second schema step: realms, roles and disabled
// users, and what the operator command line shows (last login, the client
// address and last use of sessions). Aliases become unique per realm; the
// users that exist keep their rows, in the realm "default". SQLite cannot
// drop a column's UNIQUE constraint, so there the users table is rebuilt
// as SQLite documents (migrateSQLite turns foreign keys off around it, so
// dropping the old table does not cascade to sessions).
func schemaAccess(postgres bool) string {
	users := `ALTER TABLE users ADD COLUMN realm TEXT NOT NULL DEFAULT 'default';
	ALTER TABLE users ADD COLUMN roles TEXT NOT NULL DEFAULT '';
	ALTER TABLE users ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT FALSE;
	ALTER TABLE users ADD COLUMN last_login BIGINT NOT NULL DEFAULT 0;
	ALTER TABLE users DROP CONSTRAINT users_email_key;
	ALTER TABLE users DROP CONSTRAINT users_mobile_key;`
	if !postgres {
		users = `CREATE TABLE users_new (
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
	);
	INSERT INTO users_new (id, email, mobile, email_verified, mobile_verified, created_at)
		SELECT id, email, mobile, email_verified, mobile_verified, created_at FROM users;
	DROP TABLE users;
	ALTER TABLE users_new RENAME TO users;`
	}
	bigint := "INTEGER"
	if postgres {
		bigint = "BIGINT"
	}
	return strings.ReplaceAll(users+`
	CREATE UNIQUE INDEX users_realm_email ON users(realm, email);
	CREATE UNIQUE INDEX users_realm_mobile ON users(realm, mobile);
	ALTER TABLE sessions ADD COLUMN client_ip TEXT NOT NULL DEFAULT '';
	ALTER TABLE sessions ADD COLUMN last_used BIGINT NOT NULL DEFAULT 0;
	CREATE INDEX sessions_user ON sessions(user_id);`, "BIGINT", bigint)
}

// openShared returns the store kept in pool under key, opening it on first
// use, so that every handler instance and config reload on one database
// shares one handle. Each caller releases it with pool.Delete(key).
func openShared[S caddy.Destructor](pool *caddy.UsagePool, key string, open func() (S, error)) (S, error) {
	val, _, err := pool.LoadOrNew(key, func() (caddy.Destructor, error) { return open() })
	if err != nil {
		var zero S
		return zero, err
	}
	return val.(S), nil
}

func ms(t time.Time) int64 { return t.UnixMilli() }

func (s *sqlStore) Secret(ctx context.Context, name string, generate func() ([]byte, error)) ([]byte, error) {
	var v []byte
	err := s.rdb.QueryRowContext(ctx, `SELECT value FROM secrets WHERE name = ?`, name).Scan(&v)
	if err == nil {
		return v, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("reading secret %s: %w", name, err)
	}
	nv, err := generate()
	if err != nil {
		return nil, fmt.Errorf("generating secret %s: %w", name, err)
	}
	// Whoever inserts first wins; everybody reads the winner.
	if _, err := s.db.ExecContext(ctx, `INSERT INTO secrets (name, value) VALUES (?, ?) ON CONFLICT(name) DO NOTHING`, name, nv); err != nil {
		return nil, fmt.Errorf("storing secret %s: %w", name, err)
	}
	if err := s.db.QueryRowContext(ctx, `SELECT value FROM secrets WHERE name = ?`, name).Scan(&v); err != nil {
		return nil, fmt.Errorf("reading secret %s: %w", name, err)
	}
	return v, nil
}

type scanner interface{ Scan(dest ...any) error }

func (s *sqlStore) Purge(ctx context.Context, t time.Time) error {
	for _, q := range []struct {
		sql string
		arg int64
	}{
		{`DELETE FROM codes WHERE expires_at <= ?`, ms(t)},
		{`DELETE FROM sessions WHERE revoked = TRUE OR expires_at <= ?`, ms(t)},
		{`DELETE FROM refresh_tokens WHERE expires_at <= ?`, ms(t)},
		{`DELETE FROM outbox WHERE expires_at <= ?`, ms(t)},
		{`DELETE FROM passkey_ceremonies WHERE expires_at <= ?`, ms(t)},
		{`DELETE FROM rate_limits WHERE tat <= ?`, t.UnixMicro()},
	} {
		if _, err := s.db.ExecContext(ctx, q.sql, q.arg); err != nil {
			return fmt.Errorf("purging: %w", err)
		}
	}
	return nil
}

func (s *sqlStore) Ping(ctx context.Context) error {
	// A read of a table, not SELECT 1: SQLite answers that without its file.
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM secrets`).Scan(&n); err != nil {
		return fmt.Errorf("reading storage: %w", err)
	}
	return nil
}

// Interface guards
var _ Store = (*sqlStore)(nil)

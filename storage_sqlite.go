package passwordless

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	"github.com/caddyserver/caddy/v2"
	_ "modernc.org/sqlite" // pure Go: builds without cgo
)

// sqliteHandles shares one database handle per file across handler
// instances and config reloads; the last user to go closes it.
var sqliteHandles = caddy.NewUsagePool()

// sqliteStore is the default Store: one local file, for one Caddy instance.
type sqliteStore struct {
	*sqlStore
	path string
}

// openSQLite returns the shared store for path, opening it on first use.
// Release it with releaseSQLite.
func openSQLite(path string) (*sqliteStore, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite path %q: %w", path, err)
	}
	val, _, err := sqliteHandles.LoadOrNew(abs, func() (caddy.Destructor, error) {
		return newSQLite(abs)
	})
	if err != nil {
		return nil, err
	}
	return val.(*sqliteStore), nil
}

func releaseSQLite(s *sqliteStore) error {
	_, err := sqliteHandles.Delete(s.path)
	return err
}

func newSQLite(path string) (*sqliteStore, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating directory for %s: %w", path, err)
	}
	q := url.Values{}
	// WAL lets readers go on while one writer writes; the busy timeout makes
	// writers queue instead of failing; IMMEDIATE transactions take the
	// write lock up front so read-then-write sequences cannot deadlock.
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_pragma", "foreign_keys(ON)")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	if err := migrateSQLite(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("preparing %s: %w", path, err)
	}
	// The file holds code hashes and signing keys: owner only.
	_ = os.Chmod(path, 0o600)
	noLock := func(context.Context, sqlTx, string) error { return nil }
	return &sqliteStore{sqlStore: newSQLStore(sqlDB{DB: db}, path, noLock), path: path}, nil
}

// migrations are applied in order, each once; user_version records how far.
var sqliteMigrations = []string{
	`CREATE TABLE secrets (
		name TEXT PRIMARY KEY,
		value BLOB NOT NULL
	);
	CREATE TABLE users (
		id TEXT PRIMARY KEY,
		email TEXT UNIQUE,
		mobile TEXT UNIQUE,
		email_verified BOOLEAN NOT NULL DEFAULT FALSE,
		mobile_verified BOOLEAN NOT NULL DEFAULT FALSE,
		created_at INTEGER NOT NULL
	);
	CREATE TABLE codes (
		alias TEXT NOT NULL,
		purpose TEXT NOT NULL,
		id TEXT NOT NULL UNIQUE,
		user_id TEXT NOT NULL DEFAULT '',
		hash BLOB NOT NULL,
		attempts INTEGER NOT NULL DEFAULT 0,
		expires_at INTEGER NOT NULL,
		created_at INTEGER NOT NULL,
		PRIMARY KEY (alias, purpose)
	);
	CREATE TABLE sessions (
		id TEXT PRIMARY KEY,
		user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
		created_at INTEGER NOT NULL,
		expires_at INTEGER NOT NULL,
		revoked BOOLEAN NOT NULL DEFAULT FALSE
	);
	CREATE TABLE refresh_tokens (
		hash BLOB PRIMARY KEY,
		session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
		expires_at INTEGER NOT NULL,
		used BOOLEAN NOT NULL DEFAULT FALSE
	);
	CREATE INDEX refresh_tokens_session ON refresh_tokens(session_id);
	CREATE TABLE rate_events (
		key TEXT NOT NULL,
		at INTEGER NOT NULL
	);
	CREATE INDEX rate_events_key_at ON rate_events(key, at);
	CREATE TABLE failures (
		alias TEXT PRIMARY KEY,
		count INTEGER NOT NULL,
		locked_until INTEGER NOT NULL DEFAULT 0
	);`,
}

func migrateSQLite(db *sql.DB) error {
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
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
	return tx.Commit()
}

// Interface guards
var (
	_ Store            = (*sqliteStore)(nil)
	_ caddy.Destructor = (*sqliteStore)(nil)
)

package passwordless

import (
	"context"
	"database/sql"
	"errors"
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
	noLock := func(context.Context, sqlTx, string) error { return nil }
	return &sqliteStore{sqlStore: newSQLStore(sqlDB{DB: db}, path, noLock), path: path}, nil
}

// ownerOnly makes the database owner-only before SQLite opens it. The
// file, and its -wal and -shm companions until a checkpoint, hold the
// signing key and the code HMAC key. SQLite gives -wal and -shm the mode of
// the main file, so creating that with 0600 covers all three; companions
// left by an older version with the umask's mode are repaired.
func ownerOnly(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	f.Close()
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
}

func migrateSQLite(db *sql.DB) error {
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
	defer conn.ExecContext(ctx, `PRAGMA foreign_keys = ON`)
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

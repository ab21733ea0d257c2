package passwordless

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// tempSQLite opens a store in a file named name in tb's temporary
// directory, released when tb ends.
func tempSQLite(tb testing.TB, name string) *sqliteStore {
	tb.Helper()
	s, err := openSQLite(filepath.Join(tb.TempDir(), name))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { releaseSQLite(s) })
	return s
}

// storeSQL is the SQL machinery under either store, for tests that write
// or read rows the API has no method for.
func storeSQL(s Store) *sqlStore {
	switch s := s.(type) {
	case *sqliteStore:
		return s.sqlStore
	case *postgresStore:
		return s.sqlStore
	case *sqlStore:
		return s
	case cliStore:
		return storeSQL(s.Store)
	}
	panic("storeSQL: not a SQL store")
}

func (s *sqlStore) SaveCode(ctx context.Context, c Code) error {
	return saveCode(ctx, s.db, c)
}

// PasskeyByID reads the passkey of realm with that credential id alone,
// whether or not its user is there, or answers ErrNotFound.
func (s *sqlStore) PasskeyByID(ctx context.Context, realm string, id []byte) (Passkey, error) {
	return readPasskey(s.rdb.QueryRowContext(ctx, `SELECT `+passkeyColumns+` FROM passkeys WHERE realm = ? AND id = ?`, realm, id))
}

func (s *sqlStore) SessionActive(ctx context.Context, id string, now time.Time) (bool, error) {
	var revoked bool
	var exp int64
	err := s.rdb.QueryRowContext(ctx, `SELECT revoked, expires_at FROM sessions WHERE id = ?`, id).Scan(&revoked, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading session: %w", err)
	}
	return !revoked && now.UnixMilli() < exp, nil
}

// sqliteAtVersion makes a SQLite file at schema version n, as a build of
// that version left it, with the rows that rows insert, and answers its
// path: for tests of the upgrade from it.
func sqliteAtVersion(t *testing.T, n int, rows ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), fmt.Sprintf("v%d.db", n))
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=foreign_keys(OFF)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range append(append(sqliteMigrations[:n:n], rows...), fmt.Sprintf("PRAGMA user_version = %d", n)) {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%.60s: %v", q, err)
		}
	}
	return path
}

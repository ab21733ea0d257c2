package passwordless

import (
	"context"
	"database/sql"
	"encoding/hex"
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
}

func newSQLStore(db, rdb sqlDB, name string, lock func(context.Context, sqlTx, string) error) *sqlStore {
	s := &sqlStore{db: db, rdb: rdb, lock: lock, name: name, greatest: "MAX", stop: make(chan struct{}), done: make(chan struct{})}
	if db.dollar {
		s.greatest, s.skipLocked = "GREATEST", " FOR UPDATE SKIP LOCKED"
	}
	go s.purgeLoop()
	return s
}

// Destruct closes the database when the usage pool drops the last reference.
func (s *sqlStore) Destruct() error {
	close(s.stop)
	<-s.done
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
	for {
		if err := s.Purge(context.Background(), now()); err != nil {
			caddy.Log().Named("http.handlers.passwordless").Error("purging storage", zap.String("store", s.name), zap.Error(err))
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

func (s *sqlStore) SaveCode(ctx context.Context, c Code) error {
	return saveCode(ctx, s.db, c)
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// saveCode stores c as the only live code of its alias and purpose, on the
// store or inside a transaction.
func saveCode(ctx context.Context, q execer, c Code) error {
	_, err := q.ExecContext(ctx, `INSERT INTO codes (alias, purpose, id, user_id, hash, attempts, expires_at, created_at)
		VALUES (?, ?, ?, ?, ?, 0, ?, ?)
		ON CONFLICT(alias, purpose) DO UPDATE SET id = excluded.id, user_id = excluded.user_id, hash = excluded.hash,
			attempts = 0, expires_at = excluded.expires_at, created_at = excluded.created_at`,
		c.Alias, c.Purpose, c.ID, c.UserID, c.Hash, ms(c.ExpiresAt), ms(c.CreatedAt))
	if err != nil {
		return fmt.Errorf("storing code: %w", err)
	}
	return nil
}

func (s *sqlStore) RedeemCode(ctx context.Context, alias, purpose string, match func([]byte) bool, maxAttempts int, now time.Time) (Code, CodeResult, error) {
	c := Code{Alias: alias, Purpose: purpose}
	var exp, created int64
	var attempts int
	// The attempt is claimed before the code is compared, in one atomic
	// step: of any number of concurrent guesses, at most maxAttempts are
	// ever compared. Reading first and counting after let a burst of
	// parallel guesses all be compared against one code.
	err := s.db.QueryRowContext(ctx, `UPDATE codes SET attempts = attempts + 1
		WHERE alias = ? AND purpose = ? AND attempts < ?
		RETURNING id, user_id, hash, attempts, expires_at, created_at`,
		alias, purpose, maxAttempts).Scan(&c.ID, &c.UserID, &c.Hash, &attempts, &exp, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return c, CodeMissing, nil
	}
	if err != nil {
		return c, 0, fmt.Errorf("claiming attempt: %w", err)
	}
	c.ExpiresAt, c.CreatedAt = time.UnixMilli(exp), time.UnixMilli(created)
	if !match(c.Hash) {
		if attempts >= maxAttempts {
			// The last attempt is spent: the code dies.
			if err := s.DeleteCode(ctx, c.ID); err != nil {
				return c, 0, err
			}
		}
		return c, CodeWrong, nil
	}
	// Deleting by id is the single atomic step: of two requests that both
	// matched, only one sees a row go.
	res, err := s.db.ExecContext(ctx, `DELETE FROM codes WHERE id = ?`, c.ID)
	if err != nil {
		return c, 0, fmt.Errorf("consuming code: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return c, CodeConsumed, nil
	}
	if !now.Before(c.ExpiresAt) {
		return c, CodeExpired, nil
	}
	return c, CodeOK, nil
}

func (s *sqlStore) DeleteCode(ctx context.Context, id string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM codes WHERE id = ?`, id); err != nil {
		return fmt.Errorf("deleting code: %w", err)
	}
	return nil
}

const userColumns = `id, realm, COALESCE(email, ''), COALESCE(mobile, ''), email_verified, mobile_verified, roles, disabled, created_at, last_login`

// userFields are the scan targets of userColumns; done fills in what
// needs converting.
func userFields(u *User) (dest []any, done func()) {
	var roles string
	var created, last int64
	return []any{&u.ID, &u.Realm, &u.Email, &u.Mobile, &u.EmailVerified, &u.MobileVerified, &roles, &u.Disabled, &created, &last},
		func() {
			u.Roles = splitRoles(roles)
			u.CreatedAt = time.UnixMilli(created)
			if last != 0 {
				u.LastLogin = time.UnixMilli(last)
			}
		}
}

type scanner interface{ Scan(dest ...any) error }

func scanUser(row scanner) (User, error) {
	var u User
	dest, done := userFields(&u)
	err := row.Scan(dest...)
	if errors.Is(err, sql.ErrNoRows) {
		return u, ErrNotFound
	}
	if err != nil {
		return u, fmt.Errorf("reading user: %w", err)
	}
	done()
	return u, nil
}

// aliasColumn maps a kind to its column; kinds are a closed set, so the
// result is safe to put into SQL text.
func aliasColumn(k AliasKind) string {
	if k == KindMobile {
		return "mobile"
	}
	return "email"
}

type queryRower interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func userByAlias(ctx context.Context, q queryRower, realm string, a Alias) (User, error) {
	return scanUser(q.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE realm = ? AND `+aliasColumn(a.Kind)+` = ?`, realm, a.Value))
}

func (s *sqlStore) UserByAlias(ctx context.Context, realm string, a Alias) (User, error) {
	return userByAlias(ctx, s.rdb, realm, a)
}

func (s *sqlStore) UserByID(ctx context.Context, id string) (User, error) {
	return scanUser(s.rdb.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE id = ?`, id))
}

func (s *sqlStore) Login(ctx context.Context, realm string, a Alias, create bool, now time.Time) (User, bool, error) {
	col := aliasColumn(a.Kind)
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return User{}, false, fmt.Errorf("logging in: %w", err)
	}
	defer tx.Rollback()
	if err := s.lock(ctx, tx, realmKey(realm, a.Key())); err != nil {
		return User{}, false, err
	}
	u, err := userByAlias(ctx, tx, realm, a)
	created := false
	switch {
	case errors.Is(err, ErrNotFound) && create:
		id, err := randomID()
		if err != nil {
			return User{}, false, err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO users (id, realm, `+col+`, `+col+`_verified, created_at, last_login) VALUES (?, ?, ?, TRUE, ?, ?)`,
			id, realm, a.Value, ms(now), ms(now)); err != nil {
			return User{}, false, fmt.Errorf("creating user: %w", err)
		}
		created = true
	case err != nil:
		return User{}, false, err
	case u.Disabled:
		return User{}, false, ErrNotFound
	default:
		if _, err := tx.ExecContext(ctx, `UPDATE users SET `+col+`_verified = TRUE, last_login = ? WHERE id = ?`, ms(now), u.ID); err != nil {
			return User{}, false, fmt.Errorf("marking %s verified: %w", col, err)
		}
	}
	u, err = userByAlias(ctx, tx, realm, a)
	if err != nil {
		return User{}, false, err
	}
	return u, created, tx.Commit()
}

func (s *sqlStore) LinkAlias(ctx context.Context, userID string, a Alias) (User, error) {
	col := aliasColumn(a.Kind)
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return User{}, fmt.Errorf("linking alias: %w", err)
	}
	defer tx.Rollback()
	var realm string
	err = tx.QueryRowContext(ctx, `SELECT realm FROM users WHERE id = ?`, userID).Scan(&realm)
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, ErrNotFound
	}
	if err != nil {
		return User{}, fmt.Errorf("linking alias: %w", err)
	}
	if err := s.lock(ctx, tx, realmKey(realm, a.Key())); err != nil {
		return User{}, err
	}
	owner, err := userByAlias(ctx, tx, realm, a)
	switch {
	case err == nil && owner.ID != userID:
		return User{}, &AliasTakenError{Alias: a, OwnerID: owner.ID}
	case err != nil && !errors.Is(err, ErrNotFound):
		return User{}, err
	}
	res, err := tx.ExecContext(ctx, `UPDATE users SET `+col+` = ?, `+col+`_verified = TRUE WHERE id = ?`, a.Value, userID)
	if err != nil {
		return User{}, fmt.Errorf("linking alias: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return User{}, ErrNotFound
	}
	u, err := scanUser(tx.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE id = ?`, userID))
	if err != nil {
		return User{}, err
	}
	return u, tx.Commit()
}

func (s *sqlStore) CreateSession(ctx context.Context, sess Session, refreshHash []byte, refreshExpires time.Time) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("creating session: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO sessions (id, user_id, created_at, expires_at, client_ip, last_used) VALUES (?, ?, ?, ?, ?, ?)`,
		sess.ID, sess.UserID, ms(sess.CreatedAt), ms(sess.ExpiresAt), sess.ClientIP, ms(sess.CreatedAt)); err != nil {
		return fmt.Errorf("creating session: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO refresh_tokens (hash, session_id, expires_at) VALUES (?, ?, ?)`,
		refreshHash, sess.ID, ms(refreshExpires)); err != nil {
		return fmt.Errorf("storing refresh token: %w", err)
	}
	return tx.Commit()
}

func (s *sqlStore) RotateRefresh(ctx context.Context, oldHash, newHash []byte, newExpires, now time.Time) (Session, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return Session{}, fmt.Errorf("rotating refresh token: %w", err)
	}
	defer tx.Rollback()
	if err := s.lock(ctx, tx, "refresh:"+hex.EncodeToString(oldHash)); err != nil {
		return Session{}, err
	}
	var sess Session
	var used, revoked bool
	var rexp, sexp, created int64
	err = tx.QueryRowContext(ctx, `SELECT r.used, r.expires_at, s.id, s.user_id, s.created_at, s.expires_at, s.revoked
		FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id WHERE r.hash = ?`, oldHash).
		Scan(&used, &rexp, &sess.ID, &sess.UserID, &created, &sexp, &revoked)
	if errors.Is(err, sql.ErrNoRows) {
		return Session{}, ErrNotFound
	}
	if err != nil {
		return Session{}, fmt.Errorf("reading refresh token: %w", err)
	}
	sess.CreatedAt, sess.ExpiresAt = time.UnixMilli(created), time.UnixMilli(sexp)
	if used {
		// A used refresh token coming back means it was copied: end the
		// session for both the thief and the owner (OAuth 2.0 Security BCP).
		if _, err := tx.ExecContext(ctx, `UPDATE sessions SET revoked = TRUE WHERE id = ?`, sess.ID); err != nil {
			return Session{}, fmt.Errorf("revoking session: %w", err)
		}
		if err := tx.Commit(); err != nil {
			return Session{}, err
		}
		return sess, ErrRefreshReused
	}
	if revoked || now.UnixMilli() >= rexp || now.UnixMilli() >= sexp {
		return Session{}, ErrNotFound
	}
	if _, err := tx.ExecContext(ctx, `UPDATE refresh_tokens SET used = TRUE WHERE hash = ?`, oldHash); err != nil {
		return Session{}, fmt.Errorf("using refresh token: %w", err)
	}
	// A session lives as long as its newest refresh token.
	if _, err := tx.ExecContext(ctx, `UPDATE sessions SET expires_at = ?, last_used = ? WHERE id = ?`, ms(newExpires), ms(now), sess.ID); err != nil {
		return Session{}, fmt.Errorf("extending session: %w", err)
	}
	sess.ExpiresAt = newExpires
	if _, err := tx.ExecContext(ctx, `INSERT INTO refresh_tokens (hash, session_id, expires_at) VALUES (?, ?, ?)`,
		newHash, sess.ID, ms(newExpires)); err != nil {
		return Session{}, fmt.Errorf("storing refresh token: %w", err)
	}
	return sess, tx.Commit()
}

func (s *sqlStore) RevokeSession(ctx context.Context, id string) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE sessions SET revoked = TRUE WHERE id = ?`, id); err != nil {
		return fmt.Errorf("revoking session: %w", err)
	}
	return nil
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

func (s *sqlStore) Failure(ctx context.Context, alias string, lockFor func(int) time.Duration, now time.Time) (int, time.Time, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("counting failure: %w", err)
	}
	defer tx.Rollback()
	if err := s.lock(ctx, tx, "failure:"+alias); err != nil {
		return 0, time.Time{}, err
	}
	var n int
	if err := tx.QueryRowContext(ctx, `INSERT INTO failures (alias, count) VALUES (?, 1)
		ON CONFLICT(alias) DO UPDATE SET count = failures.count + 1 RETURNING count`, alias).Scan(&n); err != nil {
		return 0, time.Time{}, fmt.Errorf("counting failure: %w", err)
	}
	var until time.Time
	if d := lockFor(n); d > 0 {
		until = now.Add(d)
		if _, err := tx.ExecContext(ctx, `UPDATE failures SET locked_until = ? WHERE alias = ?`, ms(until), alias); err != nil {
			return 0, time.Time{}, fmt.Errorf("locking alias: %w", err)
		}
	}
	return n, until, tx.Commit()
}

func (s *sqlStore) LockedUntil(ctx context.Context, alias string) (time.Time, error) {
	var until int64
	err := s.rdb.QueryRowContext(ctx, `SELECT locked_until FROM failures WHERE alias = ?`, alias).Scan(&until)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && until == 0) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("reading lockout: %w", err)
	}
	return time.UnixMilli(until), nil
}

func (s *sqlStore) ResetFailures(ctx context.Context, alias string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM failures WHERE alias = ?`, alias); err != nil {
		return fmt.Errorf("resetting failures: %w", err)
	}
	return nil
}

func (s *sqlStore) Purge(ctx context.Context, t time.Time) error {
	for _, q := range []struct {
		sql string
		arg int64
	}{
		{`DELETE FROM codes WHERE expires_at <= ?`, ms(t)},
		{`DELETE FROM sessions WHERE revoked = TRUE OR expires_at <= ?`, ms(t)},
		{`DELETE FROM refresh_tokens WHERE expires_at <= ?`, ms(t)},
		{`DELETE FROM outbox WHERE expires_at <= ?`, ms(t)},
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

package passwordless

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// roleName is what a role may be called: it travels in a comma-separated
// header and is stored comma-separated.
var roleName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$`)

// normalizeRoles checks role names and returns them sorted, without
// duplicates.
func normalizeRoles(roles []string) ([]string, error) {
	out := make([]string, 0, len(roles))
	for _, r := range roles {
		if !roleName.MatchString(r) {
			return nil, fmt.Errorf("%q is not a role name (letters, digits, and _ . : - inside)", r)
		}
		out = append(out, r)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

func joinRoles(roles []string) string { return strings.Join(roles, ",") }

func splitRoles(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// sessionUserQuery reads a session and its user's userColumns.
var sessionUserQuery = `SELECT s.id, s.user_id, s.created_at, s.expires_at, s.revoked, s.client_ip, s.last_used, ` +
	prefixColumns("u.", userColumns) + ` FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = ?`

func (s *sqlStore) SessionUser(ctx context.Context, id string, now time.Time) (SessionUser, error) {
	var su SessionUser
	var revoked bool
	var created, exp, used int64
	dest, done := userFields(&su.User)
	err := s.rdb.QueryRowContext(ctx, sessionUserQuery, id).
		Scan(append([]any{&su.Session.ID, &su.Session.UserID, &created, &exp, &revoked, &su.Session.ClientIP, &used}, dest...)...)
	if errors.Is(err, sql.ErrNoRows) {
		return su, ErrNotFound
	}
	if err != nil {
		return su, fmt.Errorf("reading session: %w", err)
	}
	done()
	su.Session.CreatedAt, su.Session.ExpiresAt, su.Session.LastUsed = time.UnixMilli(created), time.UnixMilli(exp), time.UnixMilli(used)
	su.Active = !revoked && now.UnixMilli() < exp
	if su.Active && now.Sub(su.Session.LastUsed) >= lastUsedGranularity {
		if _, err := s.db.ExecContext(ctx, `UPDATE sessions SET last_used = ? WHERE id = ?`, ms(now), id); err != nil {
			return su, fmt.Errorf("recording session use: %w", err)
		}
		su.Session.LastUsed = now
	}
	return su, nil
}

func (s *sqlStore) Sessions(ctx context.Context, userID string, now time.Time) ([]Session, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, user_id, created_at, expires_at, client_ip, last_used FROM sessions
		WHERE user_id = ? AND revoked = FALSE AND expires_at > ? ORDER BY created_at DESC, id`, userID, ms(now))
	if err != nil {
		return nil, fmt.Errorf("listing sessions: %w", err)
	}
	defer rows.Close()
	var out []Session
	for rows.Next() {
		var ss Session
		var created, exp, used int64
		if err := rows.Scan(&ss.ID, &ss.UserID, &created, &exp, &ss.ClientIP, &used); err != nil {
			return nil, fmt.Errorf("listing sessions: %w", err)
		}
		ss.CreatedAt, ss.ExpiresAt, ss.LastUsed = time.UnixMilli(created), time.UnixMilli(exp), time.UnixMilli(used)
		out = append(out, ss)
	}
	return out, rows.Err()
}

func (s *sqlStore) RevokeSessions(ctx context.Context, userID string, now time.Time) (int, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE sessions SET revoked = TRUE WHERE user_id = ? AND revoked = FALSE AND expires_at > ?`, userID, ms(now))
	if err != nil {
		return 0, fmt.Errorf("revoking sessions: %w", err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

func (s *sqlStore) Users(ctx context.Context, realm string) ([]User, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+userColumns+` FROM users WHERE realm = ? ORDER BY created_at, id`, realm)
	if err != nil {
		return nil, fmt.Errorf("listing users: %w", err)
	}
	defer rows.Close()
	var out []User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

func (s *sqlStore) CreateUser(ctx context.Context, realm string, aliases []Alias, roles []string, now time.Time) (User, error) {
	roles, err := normalizeRoles(roles)
	if err != nil {
		return User{}, err
	}
	var email, mobile sql.NullString
	for _, a := range aliases {
		v := &email
		if a.Kind == KindMobile {
			v = &mobile
		}
		if v.Valid {
			return User{}, fmt.Errorf("a user has one %s, not several", a.Kind)
		}
		*v = sql.NullString{String: a.Value, Valid: true}
	}
	if !email.Valid && !mobile.Valid {
		return User{}, errors.New("a user needs an email address or a mobile number")
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return User{}, fmt.Errorf("creating user: %w", err)
	}
	defer tx.Rollback()
	for _, a := range aliases {
		if err := s.lock(ctx, tx, realmKey(realm, a.Key())); err != nil {
			return User{}, err
		}
		owner, err := userByAlias(ctx, tx, realm, a)
		if err == nil {
			return User{}, &AliasTakenError{Alias: a, OwnerID: owner.ID}
		}
		if !errors.Is(err, ErrNotFound) {
			return User{}, err
		}
	}
	id, err := randomID()
	if err != nil {
		return User{}, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO users (id, realm, email, mobile, email_verified, mobile_verified, roles, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, id, realm, email, mobile, email.Valid, mobile.Valid, joinRoles(roles), ms(now)); err != nil {
		return User{}, fmt.Errorf("creating user: %w", err)
	}
	u, err := scanUser(tx.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE id = ?`, id))
	if err != nil {
		return User{}, err
	}
	return u, tx.Commit()
}

// updateUser runs one UPDATE of a user by id; ErrNotFound if none.
func (s *sqlStore) updateUser(ctx context.Context, what, set string, args ...any) error {
	res, err := s.db.ExecContext(ctx, `UPDATE users SET `+set+` WHERE id = ?`, args...)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return ErrNotFound
	}
	return nil
}

func (s *sqlStore) SetRoles(ctx context.Context, userID string, roles []string) error {
	roles, err := normalizeRoles(roles)
	if err != nil {
		return err
	}
	return s.updateUser(ctx, "setting roles", `roles = ?`, joinRoles(roles), userID)
}

func (s *sqlStore) SetDisabled(ctx context.Context, userID string, disabled bool) error {
	return s.updateUser(ctx, "disabling user", `disabled = ?`, disabled, userID)
}

func (s *sqlStore) DisableUser(ctx context.Context, userID string, now time.Time) (int, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("disabling user: %w", err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `UPDATE users SET disabled = TRUE WHERE id = ?`, userID)
	if err != nil {
		return 0, fmt.Errorf("disabling user: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return 0, ErrNotFound
	}
	res, err = tx.ExecContext(ctx, `UPDATE sessions SET revoked = TRUE WHERE user_id = ? AND revoked = FALSE AND expires_at > ?`, userID, ms(now))
	if err != nil {
		return 0, fmt.Errorf("disabling user: %w", err)
	}
	n, _ := res.RowsAffected()
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("disabling user: %w", err)
	}
	return int(n), nil
}

func (s *sqlStore) DeleteUser(ctx context.Context, userID string) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("deleting user: %w", err)
	}
	defer tx.Rollback()
	// Spelled out rather than left to ON DELETE CASCADE, which SQLite
	// applies only on connections with foreign keys on.
	for _, q := range []string{
		`DELETE FROM refresh_tokens WHERE session_id IN (SELECT id FROM sessions WHERE user_id = ?)`,
		`DELETE FROM sessions WHERE user_id = ?`,
		`DELETE FROM passkeys WHERE user_id = ?`,
	} {
		if _, err := tx.ExecContext(ctx, q, userID); err != nil {
			return fmt.Errorf("deleting user: %w", err)
		}
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM users WHERE id = ?`, userID)
	if err != nil {
		return fmt.Errorf("deleting user: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return ErrNotFound
	}
	return tx.Commit()
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
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return User{}, false, fmt.Errorf("logging in: %w", err)
	}
	defer tx.Rollback()
	u, created, err := s.loginIn(ctx, tx, realm, a, create, now)
	if err != nil {
		return User{}, false, err
	}
	return u, created, tx.Commit()
}

// loginIn is Login inside a transaction.
func (s *sqlStore) loginIn(ctx context.Context, tx sqlTx, realm string, a Alias, create bool, now time.Time) (User, bool, error) {
	col := aliasColumn(a.Kind)
	if err := s.lock(ctx, tx, realmKey(realm, a.Key())); err != nil {
		return User{}, false, err
	}
	if !create {
		u, err := scanUser(tx.QueryRowContext(ctx, `UPDATE users SET `+col+`_verified = TRUE, last_login = ?
			WHERE realm = ? AND `+col+` = ? AND NOT disabled RETURNING `+userColumns, ms(now), realm, a.Value))
		if err != nil && !errors.Is(err, ErrNotFound) {
			return User{}, false, fmt.Errorf("marking %s verified: %w", col, err)
		}
		return u, false, err
	}
	id, err := randomID()
	if err != nil {
		return User{}, false, err
	}
	// One statement for a new user and a returning one: the insert, or,
	// when a user holds the alias, the update of that user, if enabled. A
	// disabled holder gets neither, and the answer is ErrNotFound. The
	// conflict target names the alias's index (the WHERE matches SQLite's
	// partial one, and PostgreSQL infers its full one from it); the row
	// that comes back is the new one when it carries the id made here.
	u, err := scanUser(tx.QueryRowContext(ctx, `INSERT INTO users (id, realm, `+col+`, `+col+`_verified, created_at, last_login)
		VALUES (?, ?, ?, TRUE, ?, ?)
		ON CONFLICT (realm, `+col+`) WHERE `+col+` IS NOT NULL
		DO UPDATE SET `+col+`_verified = TRUE, last_login = excluded.last_login WHERE NOT users.disabled
		RETURNING `+userColumns, id, realm, a.Value, ms(now), ms(now)))
	switch {
	case errors.Is(err, ErrNotFound):
		return User{}, false, ErrNotFound
	case err != nil:
		return User{}, false, fmt.Errorf("signing in user: %w", err)
	}
	return u, u.ID == id, nil
}

// SignIn is a whole successful exchange in one write transaction: where
// it was five (the attempt, the code, the user, the failures, the
// session), each a turn at SQLite's one writer and a round trip on
// PostgreSQL.
func (s *sqlStore) SignIn(ctx context.Context, in SignIn, now time.Time) (SignInResult, error) {
	var res SignInResult
	notFound := false
	err := s.db.inTx(ctx, func(tx sqlTx) error {
		if in.Match != nil {
			_, code, err := redeemIn(ctx, tx, in.Key, purposeLogin, in.Match, in.MaxAttempts, now)
			if err != nil {
				return err
			}
			if code != CodeOK {
				// The attempt counts (and a last wrong one kills the code).
				res = SignInResult{Code: code}
				return nil
			}
		}
		u, created, err := s.loginIn(ctx, tx, in.Realm, in.Alias, in.Create, now)
		if errors.Is(err, ErrNotFound) {
			// The code is spent all the same, as a wrong one would be.
			notFound = true
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM failures WHERE alias = ?`, in.Key); err != nil {
			return fmt.Errorf("resetting failures: %w", err)
		}
		sess := in.Session
		sess.UserID = u.ID
		if err := createSessionIn(ctx, tx, sess, in.RefreshHash, sess.ExpiresAt); err != nil {
			return err
		}
		res = SignInResult{Code: CodeOK, User: u, Created: created}
		return nil
	})
	switch {
	case err != nil:
		return SignInResult{}, fmt.Errorf("signing in: %w", err)
	case notFound:
		return SignInResult{}, ErrNotFound
	}
	return res, nil
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
	if err := createSessionIn(ctx, tx, sess, refreshHash, refreshExpires); err != nil {
		return err
	}
	return tx.Commit()
}

// createSessionIn is CreateSession inside a transaction.
func createSessionIn(ctx context.Context, tx sqlTx, sess Session, refreshHash []byte, refreshExpires time.Time) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO sessions (id, user_id, created_at, expires_at, client_ip, last_used) VALUES (?, ?, ?, ?, ?, ?)`,
		sess.ID, sess.UserID, ms(sess.CreatedAt), ms(sess.ExpiresAt), sess.ClientIP, ms(sess.CreatedAt)); err != nil {
		return fmt.Errorf("creating session: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO refresh_tokens (hash, session_id, expires_at) VALUES (?, ?, ?)`,
		refreshHash, sess.ID, ms(refreshExpires)); err != nil {
		return fmt.Errorf("storing refresh token: %w", err)
	}
	return nil
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

package passwordless

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// The Store methods of who may get in: the state a session check reads,
// and what the operator command line changes.

func (s *sqlStore) SessionUser(ctx context.Context, id string, now time.Time) (SessionUser, error) {
	var su SessionUser
	var revoked bool
	var created, exp, used int64
	dest, done := userFields(&su.User)
	cols := `s.id, s.user_id, s.created_at, s.expires_at, s.revoked, s.client_ip, s.last_used, u.` +
		`id, u.realm, COALESCE(u.email, ''), COALESCE(u.mobile, ''), u.email_verified, u.mobile_verified, u.roles, u.disabled, u.created_at, u.last_login`
	err := s.rdb.QueryRowContext(ctx, `SELECT `+cols+` FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = ?`, id).
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

package passwordless

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

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

package passwordless

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

func (s *sqlStore) QueueCode(ctx context.Context, limits []RateLimit, c Code, m OutboxMessage, now time.Time) (time.Duration, string, error) {
	var wait time.Duration
	var by string
	err := s.db.inTx(ctx, func(tx sqlTx) error {
		if err := saveCode(ctx, tx, c); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO outbox (id, queue, channel, recipient, purpose, code, deliver, lang, next_at, expires_at, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			m.ID, m.Queue, string(m.Channel), m.To, m.Purpose, m.Code, m.Deliver, m.Lang, ms(m.CreatedAt), ms(m.ExpiresAt), ms(m.CreatedAt)); err != nil {
			return fmt.Errorf("queueing message: %w", err)
		}
		// The limits come last: on PostgreSQL a limit's row stays locked
		// until the commit, and the per-IP one may be shared by many clients.
		for _, l := range limits {
			w, err := s.hit(ctx, tx, l, now)
			if err != nil {
				return err
			}
			if w > 0 {
				// A refused request counts against no limit, and
				// stores nothing.
				wait, by = w, l.Key
				return errRefused
			}
		}
		return nil
	})
	if err == errRefused {
		return wait, by, nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("queueing code: %w", err)
	}
	return 0, "", nil
}

// errRefused undoes a transaction that found it must change nothing.
var errRefused = errors.New("refused")

func (s *sqlStore) ClaimOutbox(ctx context.Context, queue string, n int, now time.Time, lease time.Duration) ([]OutboxMessage, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("claiming messages: %w", err)
	}
	defer tx.Rollback()
	// A claim moves next_at to the end of the lease: the message is not
	// due for anyone else until then, and due again if its worker dies.
	// On PostgreSQL, SKIP LOCKED lets instances claiming at once take
	// different rows instead of queueing on the same ones.
	rows, err := tx.QueryContext(ctx, `UPDATE outbox SET next_at = ?, attempts = attempts + 1
		WHERE id IN (SELECT id FROM outbox WHERE queue = ? AND next_at <= ? ORDER BY next_at LIMIT ?`+s.skipLocked+`)
		RETURNING id, channel, recipient, purpose, code, deliver, lang, attempts, expires_at, created_at`,
		ms(now.Add(lease)), queue, ms(now), n)
	if err != nil {
		return nil, fmt.Errorf("claiming messages: %w", err)
	}
	defer rows.Close()
	var out []OutboxMessage
	for rows.Next() {
		m := OutboxMessage{Queue: queue}
		var channel string
		var exp, created int64
		if err := rows.Scan(&m.ID, &channel, &m.To, &m.Purpose, &m.Code, &m.Deliver, &m.Lang, &m.Attempts, &exp, &created); err != nil {
			return nil, fmt.Errorf("claiming messages: %w", err)
		}
		m.Channel, m.ExpiresAt, m.CreatedAt = AliasKind(channel), time.UnixMilli(exp), time.UnixMilli(created)
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("claiming messages: %w", err)
	}
	rows.Close()
	return out, tx.Commit()
}

// placeholders returns "?, ?, ..." for n values and the values as args.
func placeholders(ids []string) (string, []any) {
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	return strings.TrimSuffix(strings.Repeat("?, ", len(ids)), ", "), args
}

func (s *sqlStore) LiveCodes(ctx context.Context, ids []string, now time.Time) (map[string]bool, error) {
	live := make(map[string]bool, len(ids))
	if len(ids) == 0 {
		return live, nil
	}
	ph, args := placeholders(ids)
	rows, err := s.rdb.QueryContext(ctx, `SELECT id FROM codes WHERE id IN (`+ph+`) AND expires_at > ?`, append(args, ms(now))...)
	if err != nil {
		return nil, fmt.Errorf("reading codes: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("reading codes: %w", err)
		}
		live[id] = true
	}
	return live, rows.Err()
}

func (s *sqlStore) RetryOutbox(ctx context.Context, id string, next time.Time) error {
	if _, err := s.db.ExecContext(ctx, `UPDATE outbox SET next_at = ? WHERE id = ?`, ms(next), id); err != nil {
		return fmt.Errorf("rescheduling message: %w", err)
	}
	return nil
}

func (s *sqlStore) FinishOutbox(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	ph, args := placeholders(ids)
	if _, err := s.db.ExecContext(ctx, `DELETE FROM outbox WHERE id IN (`+ph+`)`, args...); err != nil {
		return fmt.Errorf("deleting messages: %w", err)
	}
	return nil
}

func (s *sqlStore) PendingMessages(ctx context.Context, now time.Time) (map[AliasKind]int, error) {
	// Live as LiveCodes has it: the message's code is still the alias's.
	rows, err := s.rdb.QueryContext(ctx, `SELECT o.channel, COUNT(*) FROM outbox o JOIN codes c ON c.id = o.id
		WHERE o.deliver = TRUE AND c.expires_at > ? GROUP BY o.channel`, ms(now))
	if err != nil {
		return nil, fmt.Errorf("counting queued messages: %w", err)
	}
	defer rows.Close()
	n := map[AliasKind]int{}
	for rows.Next() {
		var channel string
		var count int
		if err := rows.Scan(&channel, &count); err != nil {
			return nil, fmt.Errorf("counting queued messages: %w", err)
		}
		n[AliasKind(channel)] = count
	}
	return n, rows.Err()
}

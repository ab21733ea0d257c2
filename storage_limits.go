package passwordless

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// hit applies one GCRA limit inside tx. The state is the key's theoretical
// arrival time (TAT): each event pushes it on by Window/Count, and an
// event is refused when that would put it more than Window ahead of now.
// One upsert does it; its row lock makes concurrent hits on one key, on
// any instance, take turns, so the count is exact.
func (s *sqlStore) hit(ctx context.Context, tx sqlTx, l RateLimit, now time.Time) (time.Duration, error) {
	interval, err := l.interval()
	if err != nil {
		return 0, err
	}
	t, window := now.UnixMicro(), l.Window.Microseconds()
	var tat int64
	err = tx.QueryRowContext(ctx, `INSERT INTO rate_limits (key, tat) VALUES (?, ?)
		ON CONFLICT(key) DO UPDATE SET tat = `+s.greatest+`(rate_limits.tat, ?) + ?
		WHERE `+s.greatest+`(rate_limits.tat, ?) + ? - ? <= ?
		RETURNING tat`, l.Key, t+interval, t, interval, t, interval, t, window).Scan(&tat)
	if err == nil {
		return 0, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("rate limit: %w", err)
	}
	// Refused: the next event fits once the TAT is within one window.
	if err := tx.QueryRowContext(ctx, `SELECT tat FROM rate_limits WHERE key = ?`, l.Key).Scan(&tat); err != nil {
		return 0, fmt.Errorf("rate limit: %w", err)
	}
	return max(l.wait(tat, now), time.Millisecond), nil
}

// interval is the share of the window one event takes, in microseconds.
func (l RateLimit) interval() (int64, error) {
	if l.Count < 1 || l.Window <= 0 {
		return 0, fmt.Errorf("rate limit %q: count and window must be positive", l.Key)
	}
	return max(l.Window.Microseconds()/int64(l.Count), 1), nil
}

// wait is how long until one more event fits, for a key whose theoretical
// arrival time is tat (Unix microseconds); zero or less: it fits now.
func (l RateLimit) wait(tat int64, now time.Time) time.Duration {
	interval, _ := l.interval()
	return time.Duration(tat+interval-l.Window.Microseconds()-now.UnixMicro()) * time.Microsecond
}

func (s *sqlStore) Hit(ctx context.Context, l RateLimit, now time.Time) (time.Duration, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("rate limit: %w", err)
	}
	defer tx.Rollback()
	wait, err := s.hit(ctx, tx, l, now)
	if err != nil || wait > 0 {
		return wait, err
	}
	return 0, tx.Commit()
}

// retryAfter is what PeekLocked answers for a key whose TAT is tat: zero when
// one more event fits now, and at least a millisecond otherwise.
func (l RateLimit) retryAfter(tat int64, now time.Time) time.Duration {
	wait := l.wait(tat, now)
	if wait <= 0 {
		return 0
	}
	return max(wait, time.Millisecond)
}

// retryAfterOf is retryAfter of a TAT read by a query that may find none:
// a key without state waits for nothing.
func (l RateLimit) retryAfterOf(tat sql.NullInt64, now time.Time) time.Duration {
	if !tat.Valid {
		return 0
	}
	return l.retryAfter(tat.Int64, now)
}

// lockedUntil reads a failures row's locked_until: 0 is no lock.
func lockedUntil(until int64) time.Time {
	if until == 0 {
		return time.Time{}
	}
	return time.UnixMilli(until)
}

func (s *sqlStore) Failure(ctx context.Context, alias string, threshold int, lockFor time.Duration, now time.Time) (int, time.Time, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("counting failure: %w", err)
	}
	defer tx.Rollback()
	if err := s.lock(ctx, tx, "failure:"+alias); err != nil {
		return 0, time.Time{}, err
	}
	var n int
	// A lock that has ended starts a new run: a lock needs a whole run of
	// failures of its own.
	if err := tx.QueryRowContext(ctx, `INSERT INTO failures (alias, count) VALUES (?, 1)
		ON CONFLICT(alias) DO UPDATE SET
			count = CASE WHEN failures.locked_until > 0 AND failures.locked_until <= ? THEN 1 ELSE failures.count + 1 END,
			locked_until = CASE WHEN failures.locked_until > 0 AND failures.locked_until <= ? THEN 0 ELSE failures.locked_until END
		RETURNING count`, alias, ms(now), ms(now)).Scan(&n); err != nil {
		return 0, time.Time{}, fmt.Errorf("counting failure: %w", err)
	}
	var until time.Time
	if n >= threshold {
		until = now.Add(lockFor)
		if _, err := tx.ExecContext(ctx, `UPDATE failures SET locked_until = ? WHERE alias = ?`, ms(until), alias); err != nil {
			return 0, time.Time{}, fmt.Errorf("locking alias: %w", err)
		}
	}
	return n, until, tx.Commit()
}

func (s *sqlStore) LockedUntil(ctx context.Context, alias string) (time.Time, error) {
	var until int64
	err := s.rdb.QueryRowContext(ctx, `SELECT locked_until FROM failures WHERE alias = ?`, alias).Scan(&until)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("reading lockout: %w", err)
	}
	return lockedUntil(until), nil
}

func (s *sqlStore) PeekLocked(ctx context.Context, l RateLimit, alias string, now time.Time) (time.Duration, time.Time, error) {
	if _, err := l.interval(); err != nil {
		return 0, time.Time{}, err
	}
	var tat, until sql.NullInt64
	if err := s.db.readBeforeWrite(ctx, s.rdb, `SELECT (SELECT tat FROM rate_limits WHERE key = ?), (SELECT locked_until FROM failures WHERE alias = ?)`,
		l.Key, alias).Scan(&tat, &until); err != nil {
		return 0, time.Time{}, fmt.Errorf("rate limit and lockout: %w", err)
	}
	return l.retryAfterOf(tat, now), lockedUntil(until.Int64), nil
}

func (s *sqlStore) ResetFailures(ctx context.Context, alias string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM failures WHERE alias = ?`, alias); err != nil {
		return fmt.Errorf("resetting failures: %w", err)
	}
	return nil
}

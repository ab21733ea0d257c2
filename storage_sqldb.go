package passwordless

import (
	"context"
	"database/sql"
	"strconv"
	"strings"
	"sync"
)

// sqlDB and sqlTx rebind ? placeholders to $1, $2, ... for PostgreSQL. On
// SQLite they also queue writers fairly (gate) and keep each query
// prepared (cache): pgx caches its statements by itself.
type sqlDB struct {
	*sql.DB
	dollar bool
	// gate, when set, admits one writer at a time in the order they came:
	// blocked channel senders are woken first in, first out, where
	// database/sql hands a free connection to a random waiter. It is not
	// re-entrant: inside a transaction use the transaction, never the
	// sqlDB it came from, or the goroutine waits for itself.
	gate  chan struct{}
	cache *stmtCache
}

type sqlTx struct {
	*sql.Tx
	dollar bool
	held   *gateHold
	cache  *stmtCache
}

func rebind(dollar bool, q string) string {
	if !dollar || !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// gateHold is one pass through a gate, given back once.
type gateHold struct {
	gate chan struct{}
	once sync.Once
}

func (d sqlDB) enter(ctx context.Context) (*gateHold, error) {
	if d.gate == nil {
		return nil, nil
	}
	select {
	case d.gate <- struct{}{}:
		return &gateHold{gate: d.gate}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (h *gateHold) leave() {
	if h != nil {
		h.once.Do(func() { <-h.gate })
	}
}

// stmtCache keeps statements prepared by query text: SQLite then parses
// each query once, not on every call, which was a fifth of a request's
// CPU. A query first met inside a transaction cannot be prepared on the
// pool then (its one connection is the transaction's); it is prepared the
// next time the connection is free. Queries are literals in this package,
// so the cache stays small.
type stmtCache struct {
	mu      sync.Mutex
	stmts   map[string]*sql.Stmt
	pending map[string]bool
}

func newStmtCache() *stmtCache {
	return &stmtCache{stmts: map[string]*sql.Stmt{}, pending: map[string]bool{}}
}

func (c *stmtCache) lookup(q string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stmts[q]
	if s == nil {
		c.pending[q] = true
	}
	return s
}

// prepare prepares q on db unless it is cached; nil if that fails.
func (c *stmtCache) prepare(ctx context.Context, db *sql.DB, q string) *sql.Stmt {
	if s := c.lookup(q); s != nil {
		return s
	}
	s, err := db.PrepareContext(ctx, q)
	if err != nil {
		return nil // the caller runs q unprepared and meets the error there
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pending, q)
	if old := c.stmts[q]; old != nil {
		s.Close()
		return old
	}
	c.stmts[q] = s
	return s
}

// preparePending prepares the queries first met inside transactions.
func (c *stmtCache) preparePending(ctx context.Context, db *sql.DB) {
	c.mu.Lock()
	var qs []string
	for q := range c.pending {
		qs = append(qs, q)
	}
	c.mu.Unlock()
	for _, q := range qs {
		c.prepare(ctx, db, q)
	}
}

func (d sqlDB) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	h, err := d.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer h.leave()
	q = rebind(d.dollar, q)
	if d.cache != nil {
		if s := d.cache.prepare(ctx, d.DB, q); s != nil {
			return s.ExecContext(ctx, args...)
		}
	}
	return d.DB.ExecContext(ctx, q, args...)
}

// QueryRowContext leaves the gate before the row is scanned; the next
// writer then waits for the connection, alone, only until that scan.
func (d sqlDB) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	h, err := d.enter(ctx)
	if err != nil {
		return d.DB.QueryRowContext(ctx, "") // answers ctx's error at Scan
	}
	defer h.leave()
	q = rebind(d.dollar, q)
	if d.cache != nil {
		if s := d.cache.prepare(ctx, d.DB, q); s != nil {
			return s.QueryRowContext(ctx, args...)
		}
	}
	return d.DB.QueryRowContext(ctx, q, args...)
}

func (d sqlDB) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	h, err := d.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer h.leave()
	q = rebind(d.dollar, q)
	if d.cache != nil {
		if s := d.cache.prepare(ctx, d.DB, q); s != nil {
			return s.QueryContext(ctx, args...)
		}
	}
	return d.DB.QueryContext(ctx, q, args...)
}

func (d sqlDB) BeginTx(ctx context.Context, opts *sql.TxOptions) (sqlTx, error) {
	h, err := d.enter(ctx)
	if err != nil {
		return sqlTx{}, err
	}
	if d.cache != nil && d.gate != nil {
		// The gate is ours, so the connection is free to prepare on.
		d.cache.preparePending(ctx, d.DB)
	}
	tx, err := d.DB.BeginTx(ctx, opts)
	if err != nil {
		h.leave()
	}
	return sqlTx{tx, d.dollar, h, d.cache}, err
}

func (t sqlTx) Commit() error {
	defer t.held.leave()
	return t.Tx.Commit()
}

func (t sqlTx) Rollback() error {
	defer t.held.leave()
	return t.Tx.Rollback()
}

// stmt is q prepared for this transaction, or nil.
func (t sqlTx) stmt(ctx context.Context, q string) *sql.Stmt {
	if t.cache == nil {
		return nil
	}
	if s := t.cache.lookup(q); s != nil {
		return t.Tx.StmtContext(ctx, s)
	}
	return nil
}

func (t sqlTx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	q = rebind(t.dollar, q)
	if s := t.stmt(ctx, q); s != nil {
		return s.QueryContext(ctx, args...)
	}
	return t.Tx.QueryContext(ctx, q, args...)
}

func (t sqlTx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	q = rebind(t.dollar, q)
	if s := t.stmt(ctx, q); s != nil {
		return s.ExecContext(ctx, args...)
	}
	return t.Tx.ExecContext(ctx, q, args...)
}

func (t sqlTx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	q = rebind(t.dollar, q)
	if s := t.stmt(ctx, q); s != nil {
		return s.QueryRowContext(ctx, args...)
	}
	return t.Tx.QueryRowContext(ctx, q, args...)
}

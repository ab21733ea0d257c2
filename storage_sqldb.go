package passwordless

import (
	"context"
	"database/sql"
	"fmt"
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
	// batch, when set, lets write transactions that wait for the writer
	// share one commit (writeBatch).
	batch *writeBatch
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

// tryEnter passes the gate only if it is free now, else answers nil (and
// always nil without a gate: a send on a nil channel is never ready).
func (d sqlDB) tryEnter() *gateHold {
	select {
	case d.gate <- struct{}{}:
		return &gateHold{gate: d.gate}
	default:
		return nil
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
	return d.queryRow(ctx, q, args...)
}

// queryRow is QueryRowContext for the holder of the gate.
func (d sqlDB) queryRow(ctx context.Context, q string, args ...any) *sql.Row {
	q = rebind(d.dollar, q)
	if d.cache != nil {
		if s := d.cache.prepare(ctx, d.DB, q); s != nil {
			return s.QueryRowContext(ctx, args...)
		}
	}
	return d.DB.QueryRowContext(ctx, q, args...)
}

// readBeforeWrite is the QueryRowContext of a read that comes just before
// a write of the same request (a sign-in's limits, a passkey's owner): on
// the writer's connection when no writer holds it, else on the pool r.
// On SQLite every write empties the readers' page caches, so a pool
// connection reads its pages again from the files, a system call each,
// while the writer's cache stays valid; this read costs the writer no
// more than a short wait. It never waits for the writer.
func (d sqlDB) readBeforeWrite(ctx context.Context, r sqlDB, q string, args ...any) *sql.Row {
	if h := d.tryEnter(); h != nil {
		defer h.leave()
		return d.queryRow(ctx, q, args...)
	}
	return r.QueryRowContext(ctx, q, args...)
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
	return d.begin(ctx, opts, h)
}

// begin starts a transaction for the holder of h, a pass through the gate
// (or nil), which the transaction gives back when it ends.
func (d sqlDB) begin(ctx context.Context, opts *sql.TxOptions, h *gateHold) (sqlTx, error) {
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

// inTx runs fn in a write transaction and commits what it wrote, unless it
// fails: then nothing it wrote stays. fn must not commit or roll back.
func (d sqlDB) inTx(ctx context.Context, fn func(sqlTx) error) error {
	if d.batch != nil {
		return d.batch.run(d, fn)
	}
	tx, err := d.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// writeBatch is group commit for SQLite's one writer. Each write
// transaction costs a commit: locks, and a write system call per page into
// the log. Under load the writer is the queue every sign-in and code request
// waits in, and that cost was most of its time. So the transactions waiting
// when the writer frees up go into one: each inside a savepoint of its own,
// undone alone if it fails, and one commit for them all. A transaction
// answers only after that commit, so nothing is reported done that is not
// in the log. Alone, a transaction runs as it would without the batch.
type writeBatch struct {
	mu      sync.Mutex
	waiting []*batchJob
	running bool // a leader is running a batch, or has been told to
}

type batchJob struct {
	fn   func(sqlTx) error
	done chan error
	lead chan struct{}
}

// maxBatch bounds a batch, and so the time a commit keeps the writer.
const maxBatch = 32

// run queues fn, and answers when the batch that ran it is committed or
// rolled back. The first job in the queue leads: it runs the batch of
// everything queued, itself first, then hands the lead to the next job
// waiting, so no request keeps working for others.
func (b *writeBatch) run(d sqlDB, fn func(sqlTx) error) error {
	j := &batchJob{fn: fn, done: make(chan error, 1), lead: make(chan struct{}, 1)}
	b.mu.Lock()
	b.waiting = append(b.waiting, j)
	if !b.running {
		b.running = true
		j.lead <- struct{}{}
	}
	b.mu.Unlock()
	select {
	case err := <-j.done:
		return err
	case <-j.lead:
	}
	// The batch is what waits once the writer is free: the jobs that came
	// while the last transaction ran, or while the checkpoint did.
	h, _ := d.enter(context.Background()) // a background context never ends
	b.mu.Lock()
	n := min(len(b.waiting), maxBatch)
	jobs := b.waiting[:n:n] // j is first: only the queue's head is ever told to lead
	b.waiting = b.waiting[n:]
	b.mu.Unlock()
	d.runBatch(jobs, h)
	b.mu.Lock()
	if len(b.waiting) > 0 {
		b.waiting[0].lead <- struct{}{}
	} else {
		b.running = false
	}
	b.mu.Unlock()
	return <-j.done
}

// runBatch runs jobs in one transaction, on the writer's pass h through
// the gate, and tells each how it ended.
func (d sqlDB) runBatch(jobs []*batchJob, h *gateHold) {
	errs := make([]error, len(jobs))
	finish := func(err error) {
		for i, j := range jobs {
			if err != nil && errs[i] == nil {
				errs[i] = err
			}
			j.done <- errs[i]
		}
	}
	// The transaction is the batch's, not one request's: a client that
	// goes away interrupts its own statements, never the others' commit.
	tx, err := d.begin(context.Background(), nil, h)
	if err != nil {
		finish(err)
		return
	}
	defer tx.Rollback()
	if len(jobs) == 1 {
		if errs[0] = call(jobs[0].fn, tx); errs[0] == nil {
			errs[0] = tx.Commit()
		}
		finish(nil)
		return
	}
	ctx := context.Background()
	for i, j := range jobs {
		if _, err := tx.ExecContext(ctx, `SAVEPOINT job`); err != nil {
			finish(err)
			return
		}
		if errs[i] = call(j.fn, tx); errs[i] != nil {
			if _, err := tx.ExecContext(ctx, `ROLLBACK TO job`); err != nil {
				finish(err)
				return
			}
		}
		if _, err := tx.ExecContext(ctx, `RELEASE job`); err != nil {
			finish(err)
			return
		}
	}
	finish(tx.Commit())
}

// call runs fn, turning a panic into its error: the goroutine running a
// batch must answer every job in it.
func call(fn func(sqlTx) error, tx sqlTx) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("write transaction panicked: %v", v)
		}
	}()
	return fn(tx)
}

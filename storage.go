package passwordless

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Store keeps everything that must outlive a request: codes, users,
// sessions, keys and rate-limit counters. Every implementation passes the
// same contract test (storage_test.go). Times are passed in by the caller so
// that one clock, which tests can move, rules the whole plugin.
type Store interface {
	PasskeyStore

	// Secret returns the value stored under name, storing generate's result
	// first if there is none. Concurrent callers, on any instance, all get
	// the value that was stored first.
	Secret(ctx context.Context, name string, generate func() ([]byte, error)) ([]byte, error)

	// RedeemCode claims one of the live code's attempts for alias and
	// purpose, then asks match whether the presented code fits its hash.
	// Of any number of concurrent callers at most maxAttempts are ever
	// compared; a code whose attempts are spent, or whose time is up,
	// answers CodeMissing. On a match that is not expired, the code is
	// consumed: of concurrent callers exactly one gets CodeOK. A mismatch
	// on the last attempt kills the code.
	RedeemCode(ctx context.Context, alias, purpose string, match func(hash []byte) bool, maxAttempts int, now time.Time) (Code, CodeResult, error)
	// DeleteCode voids one code, e.g. when it could not be delivered.
	DeleteCode(ctx context.Context, id string) error

	// UserByAlias returns the user of realm that owns alias, or ErrNotFound.
	UserByAlias(ctx context.Context, realm string, a Alias) (User, error)
	// UserByID returns the user with that id, or ErrNotFound.
	UserByID(ctx context.Context, id string) (User, error)
	// Login returns the user of realm that owns a, creating it when create
	// is true (ErrNotFound otherwise), marks a verified and records now as
	// its last login; created tells whether this call made the user. A
	// disabled user answers ErrNotFound and is left as it is.
	Login(ctx context.Context, realm string, a Alias, create bool, now time.Time) (u User, created bool, err error)
	// LinkAlias gives a to the user and marks it verified. If another user
	// of the same realm owns a it answers an *AliasTakenError and changes
	// nothing.
	LinkAlias(ctx context.Context, userID string, a Alias) (User, error)

	// Users lists the users of realm, oldest first.
	Users(ctx context.Context, realm string) ([]User, error)
	// CreateUser creates a user of realm with the aliases (at most one of
	// each kind, marked verified) and stored roles. If another user of the
	// realm owns one of the aliases it answers an *AliasTakenError naming
	// that user and creates nothing.
	CreateUser(ctx context.Context, realm string, aliases []Alias, roles []string, now time.Time) (User, error)
	// SetRoles replaces the stored roles of a user; ErrNotFound if none.
	SetRoles(ctx context.Context, userID string, roles []string) error
	// SetDisabled disables or enables a user; ErrNotFound if none.
	SetDisabled(ctx context.Context, userID string, disabled bool) error
	// DisableUser disables a user and revokes its live sessions in one
	// transaction, so that no reader sees the one without the other, and
	// answers how many sessions were live; ErrNotFound if none.
	DisableUser(ctx context.Context, userID string, now time.Time) (int, error)
	// DeleteUser deletes a user with its aliases, sessions and passkeys; ErrNotFound
	// if none.
	DeleteUser(ctx context.Context, userID string) error

	// CreateSession stores a new session with its first refresh token hash.
	CreateSession(ctx context.Context, s Session, refreshHash []byte, refreshExpires time.Time) error
	// SignIn is a code exchange that succeeds, in one transaction: it
	// redeems the code (as RedeemCode; not when in.Match is nil), signs
	// the alias in (as Login), clears its failures (as ResetFailures) and
	// starts in.Session for the user with its first refresh token, which
	// lives as long as the session. When the code does not redeem, only
	// the attempt is stored and the result says why. When there is no
	// user to sign in (registration closed, or disabled), the code is
	// spent all the same and the error is ErrNotFound.
	SignIn(ctx context.Context, in SignIn, now time.Time) (SignInResult, error)
	// RotateRefresh exchanges a live refresh token (by hash) for a new one in
	// the same session. A token that was already used revokes its whole
	// session and answers ErrRefreshReused; an unknown, expired or revoked
	// one answers ErrNotFound.
	RotateRefresh(ctx context.Context, oldHash, newHash []byte, newExpires, now time.Time) (Session, error)
	// RevokeSession ends a session: its tokens stop working.
	RevokeSession(ctx context.Context, id string) error
	// SessionUser reads a session with the current state of its user in one
	// query, ErrNotFound if the session does not exist. It records now as
	// the session's last use when the recorded one is older than
	// lastUsedGranularity.
	SessionUser(ctx context.Context, id string, now time.Time) (SessionUser, error)
	// Sessions lists a user's live sessions (neither revoked nor expired),
	// newest first.
	Sessions(ctx context.Context, userID string, now time.Time) ([]Session, error)
	// RevokeSessions ends every session of a user and answers how many
	// were live.
	RevokeSessions(ctx context.Context, userID string, now time.Time) (int, error)

	// Hit counts one event under key against a limit of count per window
	// (see RateLimit); over the limit nothing is counted and it answers how
	// long until an event would be allowed. Exact across instances.
	Hit(ctx context.Context, l RateLimit, now time.Time) (retryAfter time.Duration, err error)

	// QueueCode is a code request in one transaction: it stores c as the
	// only live code for its alias and purpose (older codes of that pair
	// die) and m in the outbox, and counts each limit in order. When a limit refuses, nothing
	// is stored or counted, and it answers the wait and that limit's key.
	// Callers pass the limit most requests share last: its row is then
	// locked the shortest.
	QueueCode(ctx context.Context, limits []RateLimit, c Code, m OutboxMessage, now time.Time) (retryAfter time.Duration, refusedBy string, err error)
	// ClaimOutbox leases up to n messages of queue that are due at now for
	// lease, counting an attempt on each. Of concurrent callers, on any
	// instance, each message goes to one; a message whose lease runs out
	// (its worker died) is due again.
	ClaimOutbox(ctx context.Context, queue string, n int, now time.Time, lease time.Duration) ([]OutboxMessage, error)
	// LiveCodes reports which of the code ids are stored and unexpired at now.
	LiveCodes(ctx context.Context, ids []string, now time.Time) (map[string]bool, error)
	// RetryOutbox makes a claimed message due again at next.
	RetryOutbox(ctx context.Context, id string, next time.Time) error
	// FinishOutbox deletes messages that were sent or dropped, and so the
	// plaintext codes they carried.
	FinishOutbox(ctx context.Context, ids []string) error
	// PendingMessages counts the queued messages per channel that are
	// still to be delivered at now, on every instance: waiting, leased or
	// due for a retry, but not those that are not to be sent or whose code
	// was superseded, used or expired.
	PendingMessages(ctx context.Context, now time.Time) (map[AliasKind]int, error)
	// Failure counts a wrong guess for alias and returns the count of
	// consecutive failures in the current run; at threshold it locks the
	// alias for lockFor. A run starts over once a lock has ended.
	// LockedUntil and ResetFailures read and clear it.
	Failure(ctx context.Context, alias string, threshold int, lockFor time.Duration, now time.Time) (failures int, lockedUntil time.Time, err error)
	LockedUntil(ctx context.Context, alias string) (time.Time, error)
	// PeekLocked answers, in one read, how long until one more event fits
	// l at now (zero: it fits) without counting one, and LockedUntil of
	// alias: the two checks before an exchange.
	PeekLocked(ctx context.Context, l RateLimit, alias string, now time.Time) (retryAfter time.Duration, lockedUntil time.Time, err error)
	// ResetFailures clears the failures of alias, and so lifts a lockout.
	ResetFailures(ctx context.Context, alias string) error

	// Ping reads from the store, to tell whether it answers.
	Ping(ctx context.Context) error

	// Purge deletes what can no longer matter at now: expired codes and
	// queued messages, ended sessions with their refresh tokens, expired
	// refresh tokens, expired passkey ceremonies, and rate-limit states
	// that are back to empty.
	Purge(ctx context.Context, now time.Time) error
}

// provision resolves placeholders in the DSN and fills in the defaults.
// The handler and the operator command both call it, so that they find
// the same store.
func (c *StorageConfig) provision(env func(*string)) {
	env(&c.DSN)
	if c.Driver == "" {
		c.Driver = "sqlite"
	}
	if c.DSN == "" && c.Driver == "sqlite" {
		c.DSN = filepath.Join(caddy.AppDataDir(), "passwordless.db")
	}
}

// open returns the store, shared with every other user of the same
// database in this process, and the function that releases it.
func (c *StorageConfig) open() (Store, func() error, error) {
	switch c.Driver {
	case "sqlite":
		s, err := openSQLite(c.DSN)
		if err != nil {
			return nil, nil, fmt.Errorf("storage: %w", err)
		}
		return s, func() error { return releaseSQLite(s) }, nil
	case "postgres":
		if err := c.checkDSN(); err != nil {
			return nil, nil, err
		}
		s, err := openPostgres(c.DSN)
		if err != nil {
			return nil, nil, fmt.Errorf("storage: %w", err)
		}
		return s, func() error { return releasePostgres(s) }, nil
	default:
		return nil, nil, fmt.Errorf("storage: unknown driver %q", c.Driver)
	}
}

// unmarshal reads `storage sqlite <file>` or `storage postgres <dsn>`.
func (c *StorageConfig) unmarshal(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) != 2 {
		return d.Errf("storage needs a driver and its argument: storage sqlite <file> or storage postgres <connection string>")
	}
	if args[0] != "sqlite" && args[0] != "postgres" {
		return d.Errf("unknown storage driver %q (sqlite or postgres)", args[0])
	}
	c.Driver, c.DSN = args[0], args[1]
	return nil
}

// checkDSN refuses a postgres store without a connection string, which
// would otherwise reach libpq's defaults.
func (c StorageConfig) checkDSN() error {
	if c.Driver == "postgres" && c.DSN == "" {
		return errors.New("storage: postgres needs a connection string")
	}
	return nil
}

// openClient opens the store as the command line uses it, without
// creating it: a typo in --config must not make an empty store that a
// later `users add` fills. It answers where it looked, for messages.
func (c StorageConfig) openClient(ctx context.Context) (Store, string, func() error, error) {
	var s *sqlStore
	var where string
	var err error
	switch c.Driver {
	case "sqlite":
		s, where, err = openSQLiteClient(ctx, c.DSN)
	case "postgres":
		if err := c.checkDSN(); err != nil {
			return nil, "", nil, err
		}
		s, where, err = openPostgresClient(ctx, c.DSN)
	default:
		return nil, "", nil, fmt.Errorf("storage: unknown driver %q", c.Driver)
	}
	if err != nil {
		return nil, where, nil, err
	}
	return s, where, s.Destruct, nil
}

// maxRateWindow is the longest rate-limit window; events older than it
// are purged.
const maxRateWindow = 30 * 24 * time.Hour

// purgeEvery is how often a store deletes what can no longer matter, so
// that the database does not grow with every code and login ever made.
const purgeEvery = 10 * time.Minute

// Store errors that callers act on.
var (
	ErrNotFound      = errors.New("not found")
	ErrAliasTaken    = errors.New("alias belongs to another account")
	ErrRefreshReused = errors.New("refresh token reused")
)

// RateLimit is a limit of Count events per Window under Key, as a GCRA
// (a token bucket): up to Count at once, then one every Window/Count. Its
// state is one number per key, so a check costs the same whatever the
// window holds.
type RateLimit struct {
	Key    string
	Count  int
	Window time.Duration
}

// OutboxMessage is a code waiting in the store for a worker to deliver it.
type OutboxMessage struct {
	ID      string // the id of the code it carries
	Queue   string // which configuration sends it: see outboxQueue
	Channel AliasKind
	To      string
	Purpose string
	// Code is the plaintext code, which the message must carry. It lives
	// only until the message is sent or dropped; empty when Deliver is
	// false.
	Code string
	// Deliver is false for a request that must send nothing (an unknown
	// or demo alias): it is queued all the same, so that every code request
	// does the same work, and the worker drops it.
	Deliver bool
	// Lang is the language of the request that asked for the code: the
	// message is written in it.
	Lang      string
	Attempts  int // claims so far, this one included
	ExpiresAt time.Time
	CreatedAt time.Time
}

// AliasTakenError says which user owns an alias another one asked for.
// errors.Is(err, ErrAliasTaken) holds for it.
type AliasTakenError struct {
	Alias   Alias
	OwnerID string
}

func (e *AliasTakenError) Error() string {
	return e.Alias.Key() + " belongs to user " + e.OwnerID
}

func (e *AliasTakenError) Is(target error) bool { return target == ErrAliasTaken }

// lastUsedGranularity bounds how often a session's last use is written:
// at most once a minute per session, not once a request.
const lastUsedGranularity = time.Minute

// Purposes keep codes of one kind from being redeemed as another: a code
// sent to verify an alias can never log anybody in.
const (
	purposeLogin  = "login"
	purposeVerify = "verify"
)

// Code is a one-time code as stored: never the digits, only their HMAC.
type Code struct {
	ID        string
	Alias     string // normalised, with its kind: "email:a@b.c", "mobile:+1555..."
	Purpose   string
	UserID    string // for verify codes: the account that asked
	Hash      []byte
	ExpiresAt time.Time
	CreatedAt time.Time
}

// CodeResult is the outcome of RedeemCode.
type CodeResult int

const (
	CodeOK       CodeResult = iota
	CodeMissing             // no live code for that alias and purpose
	CodeWrong               // the code did not match; an attempt was counted
	CodeExpired             // the code matched but its time ran out meanwhile
	CodeConsumed            // another request redeemed it first
)

// AliasKind is what an alias is: an email address or a mobile number.
type AliasKind string

const (
	KindEmail  AliasKind = "email"
	KindMobile AliasKind = "mobile"
)

// Alias is a normalised email address or E.164 number.
type Alias struct {
	Kind  AliasKind
	Value string
}

// Key is the alias as one string, used to key codes, limits and failures.
func (a Alias) Key() string { return string(a.Kind) + ":" + a.Value }

// User is an account. It belongs to one realm; its aliases are unique
// within that realm.
type User struct {
	ID             string
	Realm          string
	Email          string
	Mobile         string
	EmailVerified  bool
	MobileVerified bool
	// Roles the operator set, sorted; allow_file lines may add more.
	Roles     []string
	Disabled  bool
	CreatedAt time.Time
	LastLogin time.Time // zero if never
}

// SignIn is what a code exchange needs done in the store.
type SignIn struct {
	Realm string
	Alias Alias
	// Key is the alias's key in the realm: that of its codes and failures.
	Key string
	// Match tells whether the presented code fits a stored hash; nil when
	// there is no code to redeem (a demo user's was checked already).
	Match       func(hash []byte) bool
	MaxAttempts int
	// Create makes the user if there is none (open registration).
	Create bool
	// Session is the session to start; its UserID is filled in.
	Session     Session
	RefreshHash []byte
}

// SignInResult is the outcome of SignIn.
type SignInResult struct {
	Code    CodeResult
	User    User
	Created bool
}

// Session is one login: the access and refresh tokens it issues die with it.
type Session struct {
	ID        string
	UserID    string
	CreatedAt time.Time
	ExpiresAt time.Time
	ClientIP  string    // the client's address at sign-in
	LastUsed  time.Time // to lastUsedGranularity
}

// SessionUser is a session with the current state of its user.
type SessionUser struct {
	Session Session
	// Active is false for a revoked or expired session.
	Active bool
	User   User
}

// realmKey scopes a key of codes, limits, failures or secrets to a realm.
// The default realm keeps the bare key, so what was stored before realms
// existed stays valid; other realms' keys start with "realm:", which no
// bare key does.
func realmKey(realm, key string) string {
	if realm == defaultRealm || realm == "" {
		return key
	}
	return "realm:" + realm + "/" + key
}

// StorageConfig chooses the store.
type StorageConfig struct {
	// The store: `sqlite` (one instance) or `postgres` (several instances
	// sharing one state). Default: sqlite.
	Driver string `json:"driver,omitempty"`
	// For sqlite, the database file. Default: `passwordless.db` in Caddy's
	// data directory. For postgres, the connection string (URL or
	// key=value form); use `{env.DATABASE_URL}`. Tables go into the schema
	// `passwordless` unless the string sets a search_path.
	DSN string `json:"dsn,omitempty"`
}

// repeatedFailure keeps a failure that recurs on every tick (a database
// file removed under a running server fails 40 checkpoints a second) from
// filling the log: the first failure of a run is logged, and another error
// as soon as it differs; the same one again at most once a minute, with
// how many times it happened in between; and the end of the run.
type repeatedFailure struct {
	last     string // the error last logged; "" while all is well
	loggedAt time.Time
	since    int // failures since that line
	total    int // failures in this run
}

// repeatEvery is the least time between two lines of the same failure.
const repeatEvery = time.Minute

// failing reports whether the last attempt failed.
func (r *repeatedFailure) failing() bool { return r.last != "" }

// observe takes one attempt's outcome, err nil for a success; a failure
// is logged at level.
func (r *repeatedFailure) observe(log *zap.Logger, level zapcore.Level, msg string, err error, now time.Time, fields ...zap.Field) {
	if err == nil {
		if r.failing() {
			log.Info(msg+" works again", append(fields, zap.Int("failures", r.total))...)
		}
		*r = repeatedFailure{}
		return
	}
	r.total++
	r.since++
	if r.last == err.Error() && now.Sub(r.loggedAt) < repeatEvery {
		return
	}
	if r.since > 1 {
		fields = append(fields, zap.Int("failures_not_logged", r.since-1))
	}
	log.Log(level, msg, append(fields, zap.Error(err))...)
	r.last, r.loggedAt, r.since = err.Error(), now, 0
}

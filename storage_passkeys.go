package passwordless

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// PasskeyStore keeps passkeys and the registration ceremonies that make
// them. It is part of Store; every implementation passes the passkey part
// of the contract test.
type PasskeyStore interface {
	// AddPasskey stores a new passkey for its user unless the user already
	// has max of them (ErrTooManyPasskeys) or its credential id is taken in
	// the realm (ErrPasskeyTaken); either way nothing changes. Concurrent
	// callers for one user never pass max together.
	AddPasskey(ctx context.Context, pk Passkey, max int) error
	// PasskeyOwner is what a sign-in reads, in one read: the passkey of
	// realm with that credential id, its user, and Peek of l (the
	// client's budget of failures). ErrNotFound, with a zero wait, when
	// the passkey or its user is missing.
	PasskeyOwner(ctx context.Context, realm string, id []byte, l RateLimit, now time.Time) (Passkey, User, time.Duration, error)
	// Passkeys lists a user's passkeys, oldest first.
	Passkeys(ctx context.Context, userID string) ([]Passkey, error)
	// UsePasskey records a sign-in with a passkey: the new signature
	// counter, the backup flags and now as its last use, but only if the
	// counter moves forward (count above the stored one) or both are 0, as
	// synced passkeys keep them. Of concurrent callers presenting the same
	// counter one at most passes. It answers ErrCounterRegressed, and
	// changes nothing, when the counter did not move forward; ErrNotFound
	// when the passkey is gone.
	UsePasskey(ctx context.Context, realm string, id []byte, count uint32, backupEligible, backupState bool, now time.Time) error
	// RenamePasskey names one of a user's passkeys; ErrNotFound if the user
	// has no passkey with that id.
	RenamePasskey(ctx context.Context, userID string, id []byte, name string) (Passkey, error)
	// DeletePasskey deletes one of a user's passkeys, or all of them when id
	// is nil, and answers how many went; ErrNotFound if a named one is not
	// the user's.
	DeletePasskey(ctx context.Context, userID string, id []byte) (int, error)

	// SaveCeremony stores a registration ceremony until it expires.
	SaveCeremony(ctx context.Context, c Ceremony) error
	// TakeCeremony consumes the ceremony of a challenge hash and answers
	// it: of concurrent callers exactly one gets it, the others
	// ErrNotFound, as for an unknown or purged one. Expiry is the caller's
	// to check.
	TakeCeremony(ctx context.Context, challengeHash []byte) (Ceremony, error)
	// SpendChallenge records the use of a challenge the store never saw (a
	// sign-in challenge, which the server signs instead of storing) until
	// it expires. It answers false if the challenge was spent before: of
	// concurrent callers exactly one gets true.
	SpendChallenge(ctx context.Context, c Ceremony) (bool, error)
	// PasskeySignIn is a passkey sign-in whose assertion checked out, in
	// one transaction: it spends the challenge (as SpendChallenge; false,
	// and nothing else, when it was spent before), records the use (as
	// UsePasskey: on ErrCounterRegressed or ErrNotFound only the challenge
	// stays spent) and starts sess (as CreateSession, its refresh token
	// living as long as the session).
	PasskeySignIn(ctx context.Context, c Ceremony, id []byte, count uint32, backupEligible, backupState bool, sess Session, refreshHash []byte, now time.Time) (bool, error)
}

// Errors of the passkey store.
var (
	ErrPasskeyTaken     = errors.New("credential id already registered")
	ErrTooManyPasskeys  = errors.New("too many passkeys")
	ErrCounterRegressed = errors.New("signature counter did not move forward")
)

// Passkey is a WebAuthn credential as stored: its public key, never a
// secret.
type Passkey struct {
	Realm          string
	ID             []byte // the credential id
	UserID         string
	PublicKey      []byte // COSE
	SignCount      uint32
	AAGUID         []byte
	Transports     []string
	BackupEligible bool
	BackupState    bool
	Name           string
	CreatedAt      time.Time
	LastUsedAt     time.Time // zero if never
}

// Ceremony kinds.
const (
	ceremonyRegister = "register"
	ceremonyLogin    = "login"
)

// Ceremony is a WebAuthn challenge in flight, known by its hash. A
// registration ceremony carries the state its finish needs in Data; a
// spent sign-in challenge carries nothing.
type Ceremony struct {
	ChallengeHash []byte
	Kind          string
	Realm         string
	SessionID     string // the session that began a registration
	UserID        string
	Name          string // the name asked for the new passkey
	Data          []byte // the library's session data, JSON
	ExpiresAt     time.Time
}

// schemaPasskeys adds passkeys and their ceremonies. A passkey's row goes
// with its user (DeleteUser deletes it too, for SQLite connections without
// foreign keys).
func schemaPasskeys(blob, bigint string) string {
	return strings.NewReplacer("BLOB", blob, "BIGINT", bigint).Replace(`CREATE TABLE passkeys (
		realm TEXT NOT NULL,
		id BLOB NOT NULL,
		user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
		public_key BLOB NOT NULL,
		sign_count BIGINT NOT NULL DEFAULT 0,
		aaguid BLOB NOT NULL,
		transports TEXT NOT NULL DEFAULT '',
		backup_eligible BOOLEAN NOT NULL DEFAULT FALSE,
		backup_state BOOLEAN NOT NULL DEFAULT FALSE,
		name TEXT NOT NULL,
		created_at BIGINT NOT NULL,
		last_used_at BIGINT NOT NULL DEFAULT 0,
		PRIMARY KEY (realm, id)
	);
	CREATE INDEX passkeys_user ON passkeys(user_id);
	CREATE TABLE passkey_ceremonies (
		challenge_hash BLOB PRIMARY KEY,
		kind TEXT NOT NULL,
		realm TEXT NOT NULL,
		session_id TEXT NOT NULL DEFAULT '',
		user_id TEXT NOT NULL DEFAULT '',
		name TEXT NOT NULL DEFAULT '',
		data BLOB,
		expires_at BIGINT NOT NULL
	);
	CREATE INDEX passkey_ceremonies_expiry ON passkey_ceremonies(expires_at);`)
}

const passkeyColumns = `realm, id, user_id, public_key, sign_count, aaguid, transports, backup_eligible, backup_state, name, created_at, last_used_at`

// passkeyFields are the scan targets of passkeyColumns; done fills in
// what needs converting.
func passkeyFields(pk *Passkey) (dest []any, done func()) {
	var count, created, used int64
	var transports string
	return []any{&pk.Realm, &pk.ID, &pk.UserID, &pk.PublicKey, &count, &pk.AAGUID, &transports,
			&pk.BackupEligible, &pk.BackupState, &pk.Name, &created, &used},
		func() {
			pk.SignCount = uint32(count)
			if transports != "" {
				pk.Transports = strings.Split(transports, ",")
			}
			pk.CreatedAt = time.UnixMilli(created)
			if used != 0 {
				pk.LastUsedAt = time.UnixMilli(used)
			}
		}
}

func scanPasskey(row scanner) (Passkey, error) {
	var pk Passkey
	dest, done := passkeyFields(&pk)
	if err := row.Scan(dest...); err != nil {
		return Passkey{}, err
	}
	done()
	return pk, nil
}

func (s *sqlStore) AddPasskey(ctx context.Context, pk Passkey, max int) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("adding passkey: %w", err)
	}
	defer tx.Rollback()
	// Counting and inserting must not interleave with another
	// registration of the same user, or both would pass max.
	if err := s.lock(ctx, tx, "passkeys:"+pk.UserID); err != nil {
		return err
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM passkeys WHERE user_id = ?`, pk.UserID).Scan(&n); err != nil {
		return fmt.Errorf("counting passkeys: %w", err)
	}
	if n >= max {
		return ErrTooManyPasskeys
	}
	// The credential id is unique per realm: ON CONFLICT DO NOTHING tells
	// a taken one without an error that would end the transaction.
	res, err := tx.ExecContext(ctx, `INSERT INTO passkeys (`+passkeyColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0) ON CONFLICT DO NOTHING`,
		pk.Realm, pk.ID, pk.UserID, pk.PublicKey, int64(pk.SignCount), pk.AAGUID, strings.Join(pk.Transports, ","),
		pk.BackupEligible, pk.BackupState, pk.Name, ms(pk.CreatedAt))
	if err != nil {
		return fmt.Errorf("adding passkey: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return ErrPasskeyTaken
	}
	return tx.Commit()
}

// passkeyOwnerQuery reads a passkey, its user and a limit's state in one
// statement: a sign-in is then one read where it was three.
var passkeyOwnerQuery = `SELECT (SELECT tat FROM rate_limits WHERE key = ?), ` +
	prefixColumns("p.", passkeyColumns) + `, ` + prefixColumns("u.", userColumns) + `
	FROM passkeys p JOIN users u ON u.id = p.user_id WHERE p.realm = ? AND p.id = ?`

// prefixColumns qualifies each column of a column list with a table's
// alias, inside a COALESCE too.
func prefixColumns(alias, cols string) string {
	var parts []string
	depth, start := 0, 0
	for i, c := range cols + "," {
		switch {
		case c == '(':
			depth++
		case c == ')':
			depth--
		case c == ',' && depth == 0:
			col := strings.TrimSpace(cols[start:i])
			if inner, ok := strings.CutPrefix(col, "COALESCE("); ok {
				col = "COALESCE(" + alias + inner
			} else {
				col = alias + col
			}
			parts = append(parts, col)
			start = i + 1
		}
	}
	return strings.Join(parts, ", ")
}

func (s *sqlStore) PasskeyOwner(ctx context.Context, realm string, id []byte, l RateLimit, now time.Time) (Passkey, User, time.Duration, error) {
	if _, err := l.interval(); err != nil {
		return Passkey{}, User{}, 0, err
	}
	var tat sql.NullInt64
	var u User
	var pk Passkey
	pdest, pdone := passkeyFields(&pk)
	udest, udone := userFields(&u)
	dest := append(append([]any{&tat}, pdest...), udest...)
	err := s.db.readBeforeWrite(ctx, s.rdb, passkeyOwnerQuery, l.Key, realm, id).Scan(dest...)
	if errors.Is(err, sql.ErrNoRows) {
		return Passkey{}, User{}, 0, ErrNotFound
	}
	if err != nil {
		return Passkey{}, User{}, 0, fmt.Errorf("reading passkey and owner: %w", err)
	}
	pdone()
	udone()
	return pk, u, l.retryAfterOf(tat, now), nil
}

func (s *sqlStore) Passkeys(ctx context.Context, userID string) ([]Passkey, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+passkeyColumns+` FROM passkeys WHERE user_id = ? ORDER BY created_at, id`, userID)
	if err != nil {
		return nil, fmt.Errorf("listing passkeys: %w", err)
	}
	defer rows.Close()
	var out []Passkey
	for rows.Next() {
		pk, err := scanPasskey(rows)
		if err != nil {
			return nil, fmt.Errorf("listing passkeys: %w", err)
		}
		out = append(out, pk)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing passkeys: %w", err)
	}
	return out, nil
}

func (s *sqlStore) UsePasskey(ctx context.Context, realm string, id []byte, count uint32, be, bs bool, t time.Time) error {
	return usePasskeyIn(ctx, s.db, realm, id, count, be, bs, t)
}

// usePasskeyIn is UsePasskey on the store or inside a transaction.
func usePasskeyIn(ctx context.Context, q querier, realm string, id []byte, count uint32, be, bs bool, t time.Time) error {
	// One conditional UPDATE decides: two sign-ins presenting the same
	// counter cannot both pass, as they could with a read and a write.
	res, err := q.ExecContext(ctx, `UPDATE passkeys SET sign_count = ?, backup_eligible = ?, backup_state = ?, last_used_at = ?
		WHERE realm = ? AND id = ? AND (sign_count < ? OR (sign_count = 0 AND ? = 0))`,
		int64(count), be, bs, ms(t), realm, id, int64(count), int64(count))
	if err != nil {
		return fmt.Errorf("recording passkey use: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return nil
	}
	var one int
	err = q.QueryRowContext(ctx, `SELECT 1 FROM passkeys WHERE realm = ? AND id = ?`, realm, id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("reading passkey: %w", err)
	}
	return ErrCounterRegressed
}

func (s *sqlStore) RenamePasskey(ctx context.Context, userID string, id []byte, name string) (Passkey, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE passkeys SET name = ? WHERE user_id = ? AND id = ?`, name, userID, id)
	if err != nil {
		return Passkey{}, fmt.Errorf("renaming passkey: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return Passkey{}, ErrNotFound
	}
	return readPasskey(s.db.QueryRowContext(ctx, `SELECT `+passkeyColumns+` FROM passkeys WHERE user_id = ? AND id = ?`, userID, id))
}

// readPasskey is the passkey of a one-row query of passkeyColumns, or
// ErrNotFound when there is no row.
func readPasskey(row *sql.Row) (Passkey, error) {
	pk, err := scanPasskey(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Passkey{}, ErrNotFound
	}
	if err != nil {
		return Passkey{}, fmt.Errorf("reading passkey: %w", err)
	}
	return pk, nil
}

func (s *sqlStore) DeletePasskey(ctx context.Context, userID string, id []byte) (int, error) {
	var res sql.Result
	var err error
	if id == nil {
		res, err = s.db.ExecContext(ctx, `DELETE FROM passkeys WHERE user_id = ?`, userID)
	} else {
		res, err = s.db.ExecContext(ctx, `DELETE FROM passkeys WHERE user_id = ? AND id = ?`, userID, id)
	}
	if err != nil {
		return 0, fmt.Errorf("deleting passkey: %w", err)
	}
	n, _ := res.RowsAffected()
	if id != nil && n != 1 {
		return 0, ErrNotFound
	}
	return int(n), nil
}

func (s *sqlStore) SaveCeremony(ctx context.Context, c Ceremony) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO passkey_ceremonies (challenge_hash, kind, realm, session_id, user_id, name, data, expires_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, c.ChallengeHash, c.Kind, c.Realm, c.SessionID, c.UserID, c.Name, c.Data, ms(c.ExpiresAt))
	if err != nil {
		return fmt.Errorf("saving ceremony: %w", err)
	}
	return nil
}

func (s *sqlStore) TakeCeremony(ctx context.Context, hash []byte) (Ceremony, error) {
	// DELETE … RETURNING: the one statement that both reads the ceremony
	// and makes sure no other finish can read it again.
	c := Ceremony{ChallengeHash: hash}
	var exp int64
	err := s.db.QueryRowContext(ctx, `DELETE FROM passkey_ceremonies WHERE challenge_hash = ?
		RETURNING kind, realm, session_id, user_id, name, data, expires_at`, hash).
		Scan(&c.Kind, &c.Realm, &c.SessionID, &c.UserID, &c.Name, &c.Data, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return Ceremony{}, ErrNotFound
	}
	if err != nil {
		return Ceremony{}, fmt.Errorf("taking ceremony: %w", err)
	}
	c.ExpiresAt = time.UnixMilli(exp)
	return c, nil
}

func (s *sqlStore) SpendChallenge(ctx context.Context, c Ceremony) (bool, error) {
	return spendChallengeIn(ctx, s.db, c)
}

// spendChallengeIn is SpendChallenge on the store or inside a transaction.
func spendChallengeIn(ctx context.Context, q execer, c Ceremony) (bool, error) {
	res, err := q.ExecContext(ctx, `INSERT INTO passkey_ceremonies (challenge_hash, kind, realm, expires_at)
		VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING`, c.ChallengeHash, c.Kind, c.Realm, ms(c.ExpiresAt))
	if err != nil {
		return false, fmt.Errorf("spending challenge: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// PasskeySignIn makes a passkey sign-in one write transaction, as a code's
// exchange is, where it was three (challenge, counter, session).
func (s *sqlStore) PasskeySignIn(ctx context.Context, c Ceremony, id []byte, count uint32, be, bs bool, sess Session, refreshHash []byte, t time.Time) (bool, error) {
	spent := false
	var refused error
	// inTx: on SQLite it joins concurrent sign-ins and exchanges in one
	// commit.
	err := s.db.inTx(ctx, func(tx sqlTx) error {
		ok, err := spendChallengeIn(ctx, tx, c)
		if err != nil || !ok {
			return err
		}
		spent = true
		if err := usePasskeyIn(ctx, tx, c.Realm, id, count, be, bs, t); err != nil {
			if errors.Is(err, ErrCounterRegressed) || errors.Is(err, ErrNotFound) {
				// The challenge is spent all the same: this commits.
				refused = err
				return nil
			}
			return err
		}
		return createSessionIn(ctx, tx, sess, refreshHash, sess.ExpiresAt)
	})
	if err != nil {
		return spent, fmt.Errorf("signing in with a passkey: %w", err)
	}
	return spent, refused
}

package passwordless

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"go.uber.org/zap"
)

// timeText shows a time in UTC to the second; "-" for none.
func timeText(t time.Time) string {
	if t.IsZero() || t.UnixMilli() <= 0 {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// timeOrNull is a time for JSON: null for none (stored as 0).
func timeOrNull(t time.Time) *time.Time {
	if t.IsZero() || t.UnixMilli() <= 0 {
		return nil
	}
	t = t.UTC().Truncate(time.Second)
	return &t
}

// orDash shows "" as "-" in text tables.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// lookupAlias normalises an alias as the API does.
func lookupAlias(s string) (Alias, error) {
	a, err := parseAlias(s)
	if err != nil {
		return Alias{}, fmt.Errorf("%q: %v", s, err)
	}
	return a, nil
}

// looksLikeAlias tells an alias from a user id: ids are URL-safe base64,
// which has neither '@' nor '+'.
func looksLikeAlias(s string) bool {
	return strings.Contains(s, "@") || strings.HasPrefix(strings.TrimSpace(s), "+")
}

func cmdLockoutsClear(op *operator, args []string) error {
	a, err := lookupAlias(args[0])
	if err != nil {
		return err
	}
	// Failures are counted per realm, as the handler counts them.
	key := realmKey(op.realm, a.Key())
	until, err := op.store.LockedUntil(op.ctx, key)
	if err != nil {
		return err
	}
	if err := op.store.ResetFailures(op.ctx, key); err != nil {
		return err
	}
	locked := until.After(now())
	// Audit entries name users by id, never by address: an alias that is
	// no user's is left out.
	ev := auditEvent{Channel: a.Kind}
	if u, err := op.store.UserByAlias(op.ctx, op.realm, a); err == nil {
		ev.UserID = u.ID
	}
	op.audit(auditLockoutCleared, ev, zap.Bool("was_locked", locked))
	if op.json {
		return op.printJSON(map[string]any{"alias": a.Value, "was_locked": locked})
	}
	if locked {
		op.printf("lifted the lockout of %s (it ran until %s)", a.Value, timeText(until))
	} else {
		op.printf("%s was not locked out; its count of wrong codes is reset", a.Value)
	}
	return nil
}

// findUser looks a user of the realm up by alias, normalised as the API
// does, or by id.
func (op *operator) findUser(arg string) (User, error) {
	var (
		u   User
		err error
		who string
	)
	if looksLikeAlias(arg) {
		a, aerr := lookupAlias(arg)
		if aerr != nil {
			return User{}, aerr
		}
		who = string(a.Kind) + " " + a.Value
		u, err = op.store.UserByAlias(op.ctx, op.realm, a)
	} else {
		who = "id " + arg
		u, err = op.store.UserByID(op.ctx, arg)
		if err == nil && u.Realm != op.realm {
			// Another realm's users are not this realm's to change.
			err = ErrNotFound
		}
	}
	if errors.Is(err, ErrNotFound) {
		return User{}, fmt.Errorf("no user with %s in %s", who, op.place())
	}
	return u, err
}

// place names the store, and the realm unless it is the default one.
func (op *operator) place() string {
	if op.realm == defaultRealm {
		return op.where
	}
	return fmt.Sprintf("%s, realm %s", op.where, op.realm)
}

// userView is a user as the command shows it.
type userView struct {
	meResponse
	Roles       []string   `json:"roles"`
	StoredRoles []string   `json:"stored_roles"`
	State       string     `json:"state"`
	Created     *time.Time `json:"created"`
	LastLogin   *time.Time `json:"last_login"`
	Allowed     *bool      `json:"allowed,omitempty"`
	Sessions    *int       `json:"sessions,omitempty"`
	Passkeys    *int       `json:"passkeys,omitempty"`
}

// newUserView shows u; with ac, its roles are the effective ones (stored
// and from allow lines), as protected routes see them.
func newUserView(u User, ac *accessControl) userView {
	v := userView{meResponse: newMeResponse(u), Roles: u.Roles, StoredRoles: u.Roles, State: stateText(u),
		Created: timeOrNull(u.CreatedAt), LastLogin: timeOrNull(u.LastLogin)}
	if ac != nil {
		v.Roles = ac.roles(u)
	}
	if v.Roles == nil {
		v.Roles = []string{}
	}
	if v.StoredRoles == nil {
		v.StoredRoles = []string{}
	}
	return v
}

func stateText(u User) string {
	if u.Disabled {
		return "disabled"
	}
	return "active"
}

// label names a user in a line of text: its id and aliases.
func label(u User) string {
	var aliases []string
	for _, a := range []string{u.Email, u.Mobile} {
		if a != "" {
			aliases = append(aliases, a)
		}
	}
	if len(aliases) == 0 {
		return u.ID
	}
	return u.ID + " (" + strings.Join(aliases, ", ") + ")"
}

func rolesText(roles []string) string {
	if len(roles) == 0 {
		return "-"
	}
	return strings.Join(roles, ",")
}

func cmdUsersAdd(op *operator, args []string) error {
	values, err := op.cmd.Flags().GetStringArray("role")
	if err != nil {
		return err
	}
	var roles []string
	for _, v := range values {
		roles = append(roles, strings.Split(v, ",")...)
	}
	if _, err := normalizeRoles(roles); err != nil {
		return err
	}
	var p Passwordless
	if err := json.Unmarshal(op.handler, &p); err != nil {
		return fmt.Errorf("reading the passwordless handler: %v", err)
	}
	aliases := make([]Alias, 0, len(args))
	for _, arg := range args {
		a, err := lookupAlias(arg)
		if err != nil {
			return err
		}
		// As the API refuses it: no code could ever reach that number.
		if a.Kind == KindMobile && !p.allowedNumber(a.Value) {
			return fmt.Errorf("%s: numbers in this country are not accepted (allowed calling codes: %s)", a.Value, strings.Join(p.SMS.AllowedCountryCodes, ", "))
		}
		aliases = append(aliases, a)
	}
	u, err := op.store.CreateUser(op.ctx, op.realm, aliases, roles, now())
	var taken *AliasTakenError
	if errors.As(err, &taken) {
		return fmt.Errorf("%s already belongs to user %s", taken.Alias.Value, taken.OwnerID)
	}
	if err != nil {
		return fmt.Errorf("creating user: %w", err)
	}
	op.audit(auditUserCreated, auditEvent{UserID: u.ID}, zap.Strings("roles", u.Roles))
	if op.json {
		return op.printJSON(newUserView(u, nil))
	}
	// The id alone, so that scripts can capture it.
	op.printf("%s", u.ID)
	return nil
}

func cmdUsersList(op *operator, _ []string) error {
	ac, err := op.accessControl()
	if err != nil {
		return err
	}
	defer ac.close()
	users, err := op.store.Users(op.ctx, op.realm)
	if err != nil {
		return err
	}
	views := make([]userView, 0, len(users))
	for _, u := range users {
		views = append(views, newUserView(u, ac))
	}
	if op.json {
		return op.printJSON(views)
	}
	rows := make([][]string, 0, len(users))
	for i, u := range users {
		rows = append(rows, []string{u.ID, orDash(u.Email), orDash(u.Mobile), rolesText(views[i].Roles), stateText(u), timeText(u.CreatedAt), timeText(u.LastLogin)})
	}
	return op.table([]string{"ID", "EMAIL", "MOBILE", "ROLES", "STATE", "CREATED", "LAST LOGIN"}, rows)
}

func cmdUsersShow(op *operator, args []string) error {
	u, err := op.findUser(args[0])
	if err != nil {
		return err
	}
	sessions, err := op.store.Sessions(op.ctx, u.ID, now())
	if err != nil {
		return err
	}
	ac, err := op.accessControl()
	if err != nil {
		return err
	}
	defer ac.close()
	v := newUserView(u, ac)
	n := len(sessions)
	v.Sessions = &n
	passkeys, err := op.store.Passkeys(op.ctx, u.ID)
	if err != nil {
		return err
	}
	npk := len(passkeys)
	v.Passkeys = &npk
	// With allow or allow_file, a user whose aliases no pattern matches
	// any more cannot sign in, whatever its state.
	allowed := ac.admitsUser(u)
	v.Allowed = &allowed
	if op.json {
		return op.printJSON(v)
	}
	verified := func(alias string, ok bool) string {
		if alias == "" {
			return "-"
		}
		if ok {
			return alias + " (verified)"
		}
		return alias
	}
	w := tabwriter.NewWriter(op.out, 0, 4, 2, ' ', 0)
	for _, kv := range [][2]string{
		{"id", u.ID},
		{"email", verified(u.Email, u.EmailVerified)},
		{"mobile", verified(u.Mobile, u.MobileVerified)},
		{"roles", rolesText(v.Roles)},
		{"stored roles", rolesText(u.Roles)},
		{"state", stateText(u)},
		{"allowed", yesNo(allowed)},
		{"created", timeText(u.CreatedAt)},
		{"last login", timeText(u.LastLogin)},
		{"sessions", fmt.Sprint(n)},
		{"passkeys", fmt.Sprint(npk)},
	} {
		fmt.Fprintf(w, "%s:\t%s\n", kv[0], kv[1])
	}
	return w.Flush()
}

func cmdUsersRoles(op *operator, args []string) error {
	u, err := op.findUser(args[0])
	if err != nil {
		return err
	}
	if err := op.store.SetRoles(op.ctx, u.ID, args[1:]); err != nil {
		return fmt.Errorf("setting roles: %w", err)
	}
	if u, err = op.store.UserByID(op.ctx, u.ID); err != nil {
		return err
	}
	op.audit(auditRolesChanged, auditEvent{UserID: u.ID}, zap.Strings("roles", u.Roles))
	if op.json {
		return op.printJSON(newUserView(u, nil))
	}
	if len(u.Roles) == 0 {
		op.printf("cleared the roles of %s", label(u))
	} else {
		op.printf("roles of %s: %s", label(u), strings.Join(u.Roles, ","))
	}
	return nil
}

func cmdUsersDisable(op *operator, args []string) error {
	u, err := op.findUser(args[0])
	if err != nil {
		return err
	}
	// Its sessions end as a revocation ends them, so that enabling the
	// user again does not bring them back.
	n, err := op.store.DisableUser(op.ctx, u.ID, now())
	if err != nil {
		return err
	}
	u.Disabled = true
	op.audit(auditUserDisabled, auditEvent{UserID: u.ID}, zap.Int("sessions", n))
	if op.json {
		return op.printJSON(map[string]any{"user": newUserView(u, nil), "sessions_revoked": n})
	}
	op.printf("disabled %s; %s ended", label(u), plural(n, "session"))
	return nil
}

func cmdUsersEnable(op *operator, args []string) error {
	u, err := op.findUser(args[0])
	if err != nil {
		return err
	}
	was := u.Disabled
	if was {
		if err := op.store.SetDisabled(op.ctx, u.ID, false); err != nil {
			return fmt.Errorf("enabling user: %w", err)
		}
		u.Disabled = false
		op.audit(auditUserEnabled, auditEvent{UserID: u.ID})
	}
	if op.json {
		return op.printJSON(newUserView(u, nil))
	}
	if was {
		op.printf("enabled %s", label(u))
	} else {
		op.printf("%s was not disabled", label(u))
	}
	return nil
}

func cmdUsersDelete(op *operator, args []string) error {
	u, err := op.findUser(args[0])
	if err != nil {
		return err
	}
	if err := op.store.DeleteUser(op.ctx, u.ID); err != nil {
		return fmt.Errorf("deleting user: %w", err)
	}
	op.audit(auditUserDeleted, auditEvent{UserID: u.ID})
	if op.json {
		return op.printJSON(map[string]any{"id": u.ID, "deleted": true})
	}
	op.printf("deleted %s with its sessions and passkeys", label(u))
	return nil
}

// sessionView is a session as the command shows it; never a token.
type sessionView struct {
	ID       string     `json:"id"`
	Created  *time.Time `json:"created"`
	LastUsed *time.Time `json:"last_used"`
	Expires  *time.Time `json:"expires"`
	ClientIP *string    `json:"client_ip"`
}

func cmdSessionsList(op *operator, args []string) error {
	u, err := op.findUser(args[0])
	if err != nil {
		return err
	}
	sessions, err := op.store.Sessions(op.ctx, u.ID, now())
	if err != nil {
		return err
	}
	if op.json {
		views := make([]sessionView, 0, len(sessions))
		for _, s := range sessions {
			views = append(views, sessionView{ID: s.ID, Created: timeOrNull(s.CreatedAt), LastUsed: timeOrNull(s.LastUsed),
				Expires: timeOrNull(s.ExpiresAt), ClientIP: orNull(s.ClientIP)})
		}
		return op.printJSON(views)
	}
	rows := make([][]string, 0, len(sessions))
	for _, s := range sessions {
		rows = append(rows, []string{s.ID, timeText(s.CreatedAt), timeText(s.LastUsed), timeText(s.ExpiresAt), orDash(s.ClientIP)})
	}
	return op.table([]string{"ID", "CREATED", "LAST USED", "EXPIRES", "CLIENT IP"}, rows)
}

func cmdSessionsRevoke(op *operator, args []string) error {
	u, err := op.findUser(args[0])
	if err != nil {
		return err
	}
	n, err := op.store.RevokeSessions(op.ctx, u.ID, now())
	if err != nil {
		return err
	}
	op.audit(auditSessionsRevoked, auditEvent{UserID: u.ID}, zap.Int("sessions", n))
	if op.json {
		return op.printJSON(map[string]any{"user_id": u.ID, "sessions_revoked": n})
	}
	op.printf("ended %s of %s", plural(n, "session"), label(u))
	return nil
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no (no allow pattern matches its aliases)"
}

package passwordless

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
	"github.com/prometheus/client_golang/prometheus"
)

// Passkeys (WebAuthn): a signed-in user registers passkeys, and a passkey
// alone, discoverable, with no alias typed, then signs in as a code does.
// Codes stay the way back in when every passkey is lost.

// PasskeysConfig turns passkeys on. Without it, {prefix}/passkeys answers
// 404.
type PasskeysConfig struct {
	// The relying party id: the domain passkeys are bound to, such as
	// `example.com`, without scheme, port or path. Passkeys made for it
	// work on it and its subdomains, and nowhere else. Required.
	RPID string `json:"rp_id"`
	// The site's name as the browser's passkey prompt shows it. Default:
	// the rp_id.
	RPName string `json:"rp_name,omitempty"`
	// The origins pages may sign in from: `https://` URLs of the rp_id or
	// its subdomains, with a port when not 443 (`http://` only for
	// localhost), and Android apps as `android:apk-key-hash:...`.
	// Default: `https://` and the rp_id.
	Origins []string `json:"origins,omitempty"`
	// Whether the authenticator must verify the user (fingerprint, face,
	// PIN): `required`, `preferred` or `discouraged`. Default: preferred.
	UserVerification string `json:"user_verification,omitempty"`
	// How long a registration or sign-in may take once begun, 1s to 10m.
	// Default: 5m.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// How many passkeys one user may have. Default: 10.
	MaxPerUser int `json:"max_per_user,omitempty"`

	wa           *webauthn.WebAuthn
	challengeKey []byte
}

const (
	defaultPasskeyTimeout = 5 * time.Minute
	maxPasskeyTimeout     = 10 * time.Minute
	defaultMaxPasskeys    = 10
	maxPasskeyNameLen     = 64
)

// unmarshal reads the passkeys block. A value with a placeholder is
// checked once Provision has resolved it.
func (c *PasskeysConfig) unmarshal(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	type origin struct {
		value, file string
		line        int
	}
	var origins []origin
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "rp_id":
			if err := oneArg(d, &c.RPID); err != nil {
				return err
			}
			if err := checkRPID(c.RPID); err != nil && !hasPlaceholder(c.RPID) {
				return d.Errf("passkeys: %v", err)
			}
		case "rp_name":
			if err := oneArg(d, &c.RPName); err != nil {
				return err
			}
		case "origins":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			for _, a := range args {
				origins = append(origins, origin{a, d.File(), d.Line()})
			}
			c.Origins = append(c.Origins, args...)
		case "user_verification":
			if err := oneArg(d, &c.UserVerification); err != nil {
				return err
			}
			if err := checkUserVerification(c.UserVerification); err != nil {
				return d.Errf("passkeys: %v", err)
			}
		case "timeout":
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			if err := checkPasskeyTimeout(dur); err != nil {
				return d.Errf("passkeys: %v", err)
			}
			c.Timeout = caddy.Duration(dur)
		case "max_per_user":
			n, err := intArg(d)
			if err != nil {
				return err
			}
			if err := checkMaxPasskeys(n); err != nil {
				return d.Errf("passkeys: %v", err)
			}
			c.MaxPerUser = n
		default:
			return d.Errf("unrecognized passkeys subdirective %q", d.Val())
		}
	}
	if c.RPID == "" {
		return d.Err("passkeys: rp_id is required (the site's domain, such as example.com)")
	}
	if hasPlaceholder(c.RPID) {
		return nil
	}
	for _, o := range origins {
		if err := checkOrigin(c.RPID, o.value); err != nil && !hasPlaceholder(o.value) {
			// rp_id may come after origins: the origin's own line is named.
			return fmt.Errorf("passkeys: %v, at %s:%d", err, o.file, o.line)
		}
	}
	return nil
}

// checkRPID accepts a domain name: no scheme, port, path or IP address.
func checkRPID(id string) error {
	switch {
	case strings.Contains(id, "://") || strings.ContainsAny(id, "/:?#@"):
		return fmt.Errorf("rp_id must be a domain such as example.com, not a URL: %q", id)
	case net.ParseIP(strings.Trim(id, "[]")) != nil:
		return fmt.Errorf("rp_id must be a domain, not an IP address: %q", id)
	case id == "" || strings.HasPrefix(id, ".") || strings.HasSuffix(id, ".") || strings.Contains(id, ".."):
		return fmt.Errorf("rp_id must be a domain such as example.com, not %q", id)
	}
	for _, r := range id {
		if !(r == '.' || r == '-' || '0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z') {
			return fmt.Errorf("rp_id must be a domain such as example.com, not %q", id)
		}
	}
	return nil
}

// checkOrigin accepts an origin on rp_id or under it, https (http only
// for localhost), or an Android app's origin.
func checkOrigin(rpID, o string) error {
	if strings.HasPrefix(o, "android:apk-key-hash:") {
		if len(o) == len("android:apk-key-hash:") {
			return fmt.Errorf("origin %q: the key hash is missing", o)
		}
		return nil
	}
	u, err := url.Parse(o)
	if err != nil || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("origin %q must be a scheme and host such as https://%s", o, rpID)
	}
	host := strings.ToLower(u.Hostname())
	id := strings.ToLower(rpID)
	if host != id && !strings.HasSuffix(host, "."+id) {
		return fmt.Errorf("origin %q is not on %s or under it", o, rpID)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if host != "localhost" && !strings.HasSuffix(host, ".localhost") {
			return fmt.Errorf("origin %q: http is only for localhost; use https", o)
		}
	default:
		return fmt.Errorf("origin %q must be https (or http on localhost)", o)
	}
	return nil
}

func checkUserVerification(v string) error {
	switch protocol.UserVerificationRequirement(v) {
	case protocol.VerificationRequired, protocol.VerificationPreferred, protocol.VerificationDiscouraged:
		return nil
	}
	return fmt.Errorf("user_verification must be required, preferred or discouraged, not %q", v)
}

func checkPasskeyTimeout(d time.Duration) error {
	if d < time.Second || d > maxPasskeyTimeout {
		return fmt.Errorf("timeout must be from 1s to 10m, not %s", d)
	}
	return nil
}

func checkMaxPasskeys(n int) error {
	if n < 1 || n > 100 {
		return fmt.Errorf("max_per_user must be between 1 and 100, not %d", n)
	}
	return nil
}

// provision resolves placeholders, checks what the Caddyfile could not,
// fills in the defaults and sets up the relying party. The key that signs
// sign-in challenges is the realm's, kept in the store.
func (c *PasskeysConfig) provision(ctx context.Context, env func(*string), store Store, realm string) error {
	env(&c.RPID)
	env(&c.RPName)
	env(&c.UserVerification)
	for i := range c.Origins {
		env(&c.Origins[i])
	}
	if err := checkRPID(c.RPID); err != nil {
		return err
	}
	c.RPID = strings.ToLower(c.RPID)
	if c.RPName == "" {
		c.RPName = c.RPID
	}
	if c.UserVerification == "" {
		c.UserVerification = string(protocol.VerificationPreferred)
	}
	if err := checkUserVerification(c.UserVerification); err != nil {
		return err
	}
	if c.Timeout == 0 {
		c.Timeout = caddy.Duration(defaultPasskeyTimeout)
	}
	if err := checkPasskeyTimeout(time.Duration(c.Timeout)); err != nil {
		return err
	}
	if c.MaxPerUser == 0 {
		c.MaxPerUser = defaultMaxPasskeys
	}
	if err := checkMaxPasskeys(c.MaxPerUser); err != nil {
		return err
	}
	if len(c.Origins) == 0 {
		c.Origins = []string{"https://" + c.RPID}
	}
	var web, apps []string
	for _, o := range c.Origins {
		if err := checkOrigin(c.RPID, o); err != nil {
			return err
		}
		if strings.HasPrefix(o, "android:") {
			apps = append(apps, o)
		} else {
			web = append(web, strings.TrimSuffix(o, "/"))
		}
	}
	if len(web) == 0 {
		return fmt.Errorf("origins: name at least one web origin, such as https://%s, beside the apps", c.RPID)
	}
	timeout := webauthn.TimeoutConfig{Timeout: time.Duration(c.Timeout), TimeoutUVD: time.Duration(c.Timeout)}
	wa, err := webauthn.New(&webauthn.Config{
		RPID: c.RPID, RPDisplayName: c.RPName, RPOrigins: web, RPOpaqueOrigins: apps,
		AttestationPreference: protocol.PreferNoAttestation,
		Timeouts:              webauthn.TimeoutsConfig{Login: timeout, Registration: timeout},
	})
	if err != nil {
		return err
	}
	c.wa = wa
	c.challengeKey, err = store.Secret(ctx, realmKey(realm, "passkey_challenge_key"), func() ([]byte, error) { return randomBytes(32) })
	if err != nil {
		return fmt.Errorf("challenge key: %w", err)
	}
	return nil
}

// provisionPasskeys sets up the passkeys block, if any, and claims its
// rp_id for the realm: the handlers of one realm share users and so their
// passkeys, which work for one rp_id only.
func (p *Passwordless) provisionPasskeys(ctx caddy.Context, env func(*string)) error {
	if p.Passkeys == nil {
		return nil
	}
	if err := p.Passkeys.provision(ctx, env, p.store, p.Realm); err != nil {
		return err
	}
	return claimRPID(p.realmEntry.key, ctx.Done(), p.Passkeys.RPID, "prefix "+p.Prefix)
}

// rpIDs holds, per store and realm, the rp_id the handlers of the
// configuration being loaded gave it.
var rpIDs = struct {
	sync.Mutex
	m map[string]rpClaim
}{m: make(map[string]rpClaim)}

type rpClaim struct {
	rpID, where string
	config      <-chan struct{} // Done of the config load it belongs to
}

// claimRPID records rpID for the realm (its store and name, key) in the
// configuration config, and fails if another handler of that
// configuration gave the realm another. A claim of an older
// configuration, still running during a reload, is replaced.
func claimRPID(key string, config <-chan struct{}, rpID, where string) error {
	rpIDs.Lock()
	defer rpIDs.Unlock()
	c, ok := rpIDs.m[key]
	if ok && c.config == config && c.rpID == rpID {
		return nil
	}
	if ok && c.config == config {
		return fmt.Errorf("rp_id %s (%s) and rp_id %s (%s) share a realm; a realm's passkeys belong to one rp_id: give the blocks one rp_id, or different realms",
			c.rpID, c.where, rpID, where)
	}
	rpIDs.m[key] = rpClaim{rpID: rpID, where: where, config: config}
	return nil
}

// Sign-in challenges are not stored when they are handed out: anyone may
// ask for one, and the store must not grow with what anonymous clients
// ask. A challenge carries its own expiry and the realm's MAC instead;
// the store learns of it only when a finish spends it.
const (
	challengeNonceLen = 12
	challengeMACLen   = 16
	challengeLen      = challengeNonceLen + 4 + challengeMACLen // 32 bytes
)

// loginChallenge makes a sign-in challenge that lives the timeout.
func (c *PasskeysConfig) loginChallenge(realm string, t time.Time) ([]byte, error) {
	ch, err := randomBytes(challengeNonceLen)
	if err != nil {
		return nil, err
	}
	exp := t.Add(time.Duration(c.Timeout)).Unix()
	ch = binary.BigEndian.AppendUint32(ch, uint32(exp))
	return append(ch, c.challengeMAC(realm, ch)...), nil
}

func (c *PasskeysConfig) challengeMAC(realm string, body []byte) []byte {
	m := hmac.New(sha256.New, c.challengeKey)
	m.Write([]byte(ceremonyLogin + "\x00" + realm + "\x00"))
	m.Write(body)
	return m.Sum(nil)[:challengeMACLen]
}

// checkLoginChallenge answers the expiry of a sign-in challenge this realm
// made, or false if it made none such or it expired.
func (c *PasskeysConfig) checkLoginChallenge(realm string, ch []byte, t time.Time) (time.Time, bool) {
	if len(ch) != challengeLen {
		return time.Time{}, false
	}
	body, mac := ch[:challengeNonceLen+4], ch[challengeNonceLen+4:]
	if !hmac.Equal(mac, c.challengeMAC(realm, body)) {
		return time.Time{}, false
	}
	exp := time.Unix(int64(binary.BigEndian.Uint32(body[challengeNonceLen:])), 0)
	return exp, t.Before(exp)
}

func challengeHash(ch []byte) []byte {
	h := sha256.Sum256(ch)
	return h[:]
}

// The audit messages and the metric channel of passkeys.
const (
	auditPasskeyAdded          = "passkey added"
	auditPasskeyDeleted        = "passkey deleted"
	auditPasskeyCloneSuspected = "passkey clone suspected"

	// channelPasskey is the channel of passkey sign-ins in audit entries
	// and metrics; it is no kind of alias.
	channelPasskey AliasKind = "passkey"
)

var passkeysRegistered = prometheus.NewCounterVec(prometheus.CounterOpts{
	Namespace: "caddy", Subsystem: "passwordless", Name: "passkeys_registered_total",
	Help: "Passkey registrations by result: success, or invalid (refused: a bad or expired ceremony, a taken id, too many passkeys).",
}, []string{"result"})

func init() {
	for _, r := range []string{loginSuccess, loginInvalid} {
		metrics.logins.WithLabelValues(string(channelPasskey), r)
		passkeysRegistered.WithLabelValues(r)
	}
}

// passkeyRoutes adds the passkey endpoints and the account page.
func (p *Passwordless) passkeyRoutes(m map[string]endpoint) {
	if len(p.senders) > 0 {
		m["account"] = get(p.serveAccount)
	}
	if p.Passkeys == nil {
		return
	}
	m["passkeys"] = get(p.servePasskeyList)
	m["passkeys/register/begin"] = post(p.servePasskeyRegisterBegin)
	m["passkeys/register/finish"] = post(p.servePasskeyRegisterFinish)
	m["passkeys/login/begin"] = post(p.servePasskeyLoginBegin)
	m["passkeys/login/finish"] = post(p.servePasskeyLoginFinish)
}

// passkeyItem is the endpoint of one passkey, passkeys/{id}.
func (p *Passwordless) passkeyItem(name string) (endpoint, bool) {
	id, ok := strings.CutPrefix(name, "passkeys/")
	if p.Passkeys == nil || !ok || id == "" || strings.Contains(id, "/") {
		return nil, false
	}
	return endpoint{
		http.MethodPatch:  func(w http.ResponseWriter, r *http.Request) *apiError { return p.servePasskeyRename(w, r, id) },
		http.MethodDelete: func(w http.ResponseWriter, r *http.Request) *apiError { return p.servePasskeyDelete(w, r, id) },
	}, true
}

// passkeyView is a passkey as the API shows it.
type passkeyView struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	BackedUp   bool       `json:"backed_up"`
	Transports []string   `json:"transports"`
	AAGUID     string     `json:"aaguid"`
}

func newPasskeyView(pk Passkey) passkeyView {
	v := passkeyView{ID: base64.RawURLEncoding.EncodeToString(pk.ID), Name: pk.Name, CreatedAt: pk.CreatedAt.UTC(),
		BackedUp: pk.BackupState, Transports: pk.Transports, AAGUID: formatAAGUID(pk.AAGUID)}
	if v.Transports == nil {
		v.Transports = []string{}
	}
	if !pk.LastUsedAt.IsZero() {
		t := pk.LastUsedAt.UTC()
		v.LastUsedAt = &t
	}
	return v
}

func formatAAGUID(b []byte) string {
	if len(b) != 16 {
		return "00000000-0000-0000-0000-000000000000"
	}
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// readBody reads a request body of at most maxBodyBytes.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, &apiError{status: http.StatusRequestEntityTooLarge, detail: fmt.Sprintf("The request body is larger than %d KiB.", maxBodyBytes>>10)}
		}
		return nil, badRequest("The request body could not be read.")
	}
	return body, nil
}

// passkeyName cleans a name a user gave a passkey.
func passkeyName(s string) (string, *apiError) {
	s = strings.TrimSpace(s)
	if utf8.RuneCountInString(s) > maxPasskeyNameLen || strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return "", fieldError("name", fmt.Sprintf("Give a name of at most %d characters, on one line.", maxPasskeyNameLen))
	}
	return s, nil
}

// servePasskeyList is GET {prefix}/passkeys: the signed-in user's passkeys.
func (p *Passwordless) servePasskeyList(w http.ResponseWriter, r *http.Request) *apiError {
	c, e := p.bearer(r)
	if e != nil {
		return e
	}
	list, err := p.store.Passkeys(r.Context(), c.Subject)
	if err != nil {
		return p.internal("listing passkeys", err)
	}
	views := make([]passkeyView, len(list))
	for i, pk := range list {
		views[i] = newPasskeyView(pk)
	}
	writeJSON(w, http.StatusOK, map[string]any{"passkeys": views})
	return nil
}

var passkeyNotFound = &apiError{status: http.StatusNotFound, detail: "Not found."}

// servePasskeyRename is PATCH {prefix}/passkeys/{id}.
func (p *Passwordless) servePasskeyRename(w http.ResponseWriter, r *http.Request, rawID string) *apiError {
	c, e := p.bearer(r)
	if e != nil {
		return e
	}
	f, e := readFields(w, r, "name")
	if e != nil {
		return e
	}
	name, e := passkeyName(f["name"])
	if e != nil {
		return e
	}
	if name == "" {
		return fieldError("name", "This field is required.")
	}
	id, err := base64.RawURLEncoding.DecodeString(rawID)
	if err != nil {
		return passkeyNotFound
	}
	pk, err := p.store.RenamePasskey(r.Context(), c.Subject, id, name)
	if errors.Is(err, ErrNotFound) {
		return passkeyNotFound
	}
	if err != nil {
		return p.internal("renaming passkey", err)
	}
	writeJSON(w, http.StatusOK, newPasskeyView(pk))
	return nil
}

// servePasskeyDelete is DELETE {prefix}/passkeys/{id}. The passkey stops
// signing in at once, on every instance: sign-ins read it from the store.
func (p *Passwordless) servePasskeyDelete(w http.ResponseWriter, r *http.Request, rawID string) *apiError {
	c, e := p.bearer(r)
	if e != nil {
		return e
	}
	id, err := base64.RawURLEncoding.DecodeString(rawID)
	if err != nil {
		return passkeyNotFound
	}
	ctx := context.WithoutCancel(r.Context())
	_, err = p.store.DeletePasskey(ctx, c.Subject, id)
	if errors.Is(err, ErrNotFound) {
		return passkeyNotFound
	}
	if err != nil {
		return p.internal("deleting passkey", err)
	}
	p.audit(ctx, auditPasskeyDeleted, auditEvent{UserID: c.Subject, SessionID: c.SessionID, PasskeyID: rawID})
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

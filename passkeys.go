package passwordless

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
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
	"github.com/go-webauthn/webauthn/protocol/webauthncose"
	"github.com/go-webauthn/webauthn/webauthn"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
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

// passkeyUser is a user as the WebAuthn library sees it. The user handle
// is the user's id: random, opaque, with no alias in it.
type passkeyUser struct {
	u     User
	creds []webauthn.Credential
}

func (pu passkeyUser) WebAuthnID() []byte { return []byte(pu.u.ID) }

func (pu passkeyUser) WebAuthnName() string {
	if pu.u.Email != "" {
		return pu.u.Email
	}
	return pu.u.Mobile
}

func (pu passkeyUser) WebAuthnDisplayName() string                { return pu.WebAuthnName() }
func (pu passkeyUser) WebAuthnCredentials() []webauthn.Credential { return pu.creds }

// credential is pk as the library needs it to check an assertion.
func (pk Passkey) credential() webauthn.Credential {
	return webauthn.Credential{
		ID: pk.ID, PublicKey: pk.PublicKey,
		Flags:         webauthn.CredentialFlags{BackupEligible: pk.BackupEligible, BackupState: pk.BackupState},
		Authenticator: webauthn.Authenticator{AAGUID: pk.AAGUID, SignCount: pk.SignCount},
	}
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

// servePasskeyRegisterBegin is POST {prefix}/passkeys/register/begin: the
// options for navigator.credentials.create(), for the signed-in user.
func (p *Passwordless) servePasskeyRegisterBegin(w http.ResponseWriter, r *http.Request) *apiError {
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
	ctx := r.Context()
	u, err := p.store.UserByID(ctx, c.Subject)
	if err != nil {
		return p.internal("reading user", err)
	}
	existing, err := p.store.Passkeys(ctx, u.ID)
	if err != nil {
		return p.internal("listing passkeys", err)
	}
	pc := p.Passkeys
	if len(existing) >= pc.MaxPerUser {
		return tooManyPasskeys(pc.MaxPerUser)
	}
	exclude := make([]protocol.CredentialDescriptor, len(existing))
	for i, pk := range existing {
		exclude[i] = protocol.CredentialDescriptor{Type: protocol.PublicKeyCredentialType, CredentialID: pk.ID}
	}
	creation, session, err := pc.wa.BeginRegistration(passkeyUser{u: u},
		webauthn.WithCredentialParameters([]protocol.CredentialParameter{
			{Type: protocol.PublicKeyCredentialType, Algorithm: webauthncose.AlgES256},
			{Type: protocol.PublicKeyCredentialType, Algorithm: webauthncose.AlgEdDSA},
			{Type: protocol.PublicKeyCredentialType, Algorithm: webauthncose.AlgRS256},
		}),
		webauthn.WithAuthenticatorSelection(protocol.AuthenticatorSelection{
			UserVerification: protocol.UserVerificationRequirement(pc.UserVerification),
		}),
		// Discoverable: a passkey signs in with no alias typed, and is
		// offered by autofill.
		webauthn.WithResidentKeyRequirement(protocol.ResidentKeyRequirementRequired),
		webauthn.WithExclusions(exclude),
		webauthn.WithConveyancePreference(protocol.PreferNoAttestation),
		// Asked for, so that the library accepts the result browsers send.
		webauthn.WithExtensions(webauthn.WithExtensionCredProps()),
	)
	if err != nil {
		return p.internal("beginning registration", err)
	}
	data, err := json.Marshal(session)
	if err != nil {
		return p.internal("encoding ceremony", err)
	}
	err = p.store.SaveCeremony(ctx, Ceremony{
		ChallengeHash: challengeHash(creation.Response.Challenge), Kind: ceremonyRegister, Realm: p.Realm,
		SessionID: c.SessionID, UserID: u.ID, Name: name, Data: data,
		ExpiresAt: now().Add(time.Duration(pc.Timeout)),
	})
	if err != nil {
		return p.internal("saving ceremony", err)
	}
	writeJSON(w, http.StatusOK, creation)
	return nil
}

func tooManyPasskeys(max int) *apiError {
	return badRequest(fmt.Sprintf("You have %d passkeys, the most allowed. Delete one to add another.", max))
}

// registrationFailed is the answer to a registration that cannot be
// checked or did not pass.
var registrationFailed = badRequest("The passkey could not be registered. Start again.")

// servePasskeyRegisterFinish is POST {prefix}/passkeys/register/finish:
// the new credential, checked against the ceremony its session began.
func (p *Passwordless) servePasskeyRegisterFinish(w http.ResponseWriter, r *http.Request) *apiError {
	c, e := p.bearer(r)
	if e != nil {
		return e
	}
	body, e := readBody(w, r)
	if e != nil {
		return e
	}
	ctx := context.WithoutCancel(r.Context())
	pk, e := p.registerPasskey(ctx, c, body)
	if e != nil {
		passkeysRegistered.WithLabelValues(loginInvalid).Inc()
		return e
	}
	passkeysRegistered.WithLabelValues(loginSuccess).Inc()
	p.audit(ctx, auditPasskeyAdded, auditEvent{UserID: pk.UserID, SessionID: c.SessionID, PasskeyID: base64.RawURLEncoding.EncodeToString(pk.ID)})
	writeJSON(w, http.StatusCreated, newPasskeyView(pk))
	return nil
}

func (p *Passwordless) registerPasskey(ctx context.Context, c *Claims, body []byte) (Passkey, *apiError) {
	parsed, err := protocol.ParseCredentialCreationResponseBytes(body)
	if err != nil {
		p.logger.Debug("passkey registration refused", zap.String("reason", describe(err)))
		return Passkey{}, registrationFailed
	}
	ch, err := base64.RawURLEncoding.DecodeString(parsed.Response.CollectedClientData.Challenge)
	if err != nil {
		return Passkey{}, registrationFailed
	}
	// Taken whatever comes next: a challenge serves one finish.
	cer, err := p.store.TakeCeremony(ctx, challengeHash(ch))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return Passkey{}, p.internal("taking ceremony", err)
	}
	// The ceremony is the session's that began it, in this realm, in time.
	if err != nil || cer.Kind != ceremonyRegister || cer.Realm != p.Realm || cer.SessionID != c.SessionID ||
		cer.UserID != c.Subject || !now().Before(cer.ExpiresAt) {
		p.logger.Debug("passkey registration refused", zap.String("reason", "no live ceremony of this session"))
		return Passkey{}, registrationFailed
	}
	var session webauthn.SessionData
	if err := json.Unmarshal(cer.Data, &session); err != nil {
		return Passkey{}, p.internal("decoding ceremony", err)
	}
	u, err := p.store.UserByID(ctx, c.Subject)
	if errors.Is(err, ErrNotFound) {
		return Passkey{}, registrationFailed // deleted meanwhile
	}
	if err != nil {
		return Passkey{}, p.internal("reading user", err)
	}
	cred, err := p.Passkeys.wa.CreateCredential(passkeyUser{u: u}, session, parsed)
	if err != nil {
		p.logger.Debug("passkey registration refused", zap.String("reason", describe(err)))
		return Passkey{}, registrationFailed
	}
	name := cer.Name
	if name == "" {
		name = "Passkey"
	}
	transports := make([]string, 0, len(cred.Transport))
	for _, t := range cred.Transport {
		transports = append(transports, string(t))
	}
	pk := Passkey{
		Realm: p.Realm, ID: cred.ID, UserID: u.ID, PublicKey: cred.PublicKey, SignCount: cred.Authenticator.SignCount,
		AAGUID: cred.Authenticator.AAGUID, Transports: transports,
		BackupEligible: cred.Flags.BackupEligible, BackupState: cred.Flags.BackupState,
		Name: name, CreatedAt: now(),
	}
	switch err := p.store.AddPasskey(ctx, pk, p.Passkeys.MaxPerUser); {
	case errors.Is(err, ErrPasskeyTaken):
		return Passkey{}, &apiError{status: http.StatusConflict, detail: "This passkey is already registered."}
	case errors.Is(err, ErrTooManyPasskeys):
		return Passkey{}, tooManyPasskeys(p.Passkeys.MaxPerUser)
	case err != nil:
		return Passkey{}, p.internal("adding passkey", err)
	}
	return pk, nil
}

// describe is a library error for the debug log: its details, never the
// request's data.
func describe(err error) string {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		return pe.Type + ": " + pe.Details
	}
	return err.Error()
}

// requestOptions are the options of navigator.credentials.get(): no
// allowCredentials, since no alias is asked, so every client gets the
// same.
type requestOptions struct {
	PublicKey struct {
		Challenge        protocol.URLEncodedBase64 `json:"challenge"`
		RPID             string                    `json:"rpId"`
		Timeout          int64                     `json:"timeout"`
		UserVerification string                    `json:"userVerification"`
	} `json:"publicKey"`
}

// servePasskeyLoginBegin is POST {prefix}/passkeys/login/begin.
func (p *Passwordless) servePasskeyLoginBegin(w http.ResponseWriter, r *http.Request) *apiError {
	if _, e := readFields(w, r); e != nil {
		return e
	}
	pc := p.Passkeys
	ch, err := pc.loginChallenge(p.Realm, now())
	if err != nil {
		return p.internal("generating challenge", err)
	}
	var o requestOptions
	o.PublicKey.Challenge = ch
	o.PublicKey.RPID = pc.RPID
	o.PublicKey.Timeout = time.Duration(pc.Timeout).Milliseconds()
	o.PublicKey.UserVerification = pc.UserVerification
	writeJSON(w, http.StatusOK, o)
	return nil
}

// passkeyFailure is the one answer to every failed passkey sign-in.
var passkeyFailure = &apiError{status: http.StatusBadRequest, detail: "Passkey sign-in failed."}

// servePasskeyLoginFinish is POST {prefix}/passkeys/login/finish: an
// assertion for tokens, as /token gives for a code.
func (p *Passwordless) servePasskeyLoginFinish(w http.ResponseWriter, r *http.Request) *apiError {
	body, e := readBody(w, r)
	if e != nil {
		return e
	}
	// Once the assertion is being checked the work must finish: its
	// challenge is spent either way.
	ctx := context.WithoutCancel(r.Context())
	res := p.passkeyLogin(ctx, r, body)
	if res.err != nil {
		return res.err
	}
	s := res.session
	resp, e := p.tokens(res.user, s.ID, res.refresh)
	if e != nil {
		return e
	}
	p.passkeyLoggedIn(ctx, res, s.ID)
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// passkeySignIn is the outcome of a passkey sign-in.
type passkeySignIn struct {
	user    User
	passkey Passkey
	// session is the session started, with its first refresh token.
	session Session
	refresh string
	// unknown is the credential id of an assertion whose passkey does not
	// exist here, for the browser to forget it.
	unknown string
	err     *apiError
}

// passkeyLogin checks an assertion and answers whose it is. Every failure
// answers alike and counts against the client's failed_per_ip budget.
func (p *Passwordless) passkeyLogin(ctx context.Context, r *http.Request, body []byte) passkeySignIn {
	ip := p.clientKey(r)
	wait, err := p.store.Peek(ctx, p.failedIPLimit(ip), now())
	if err != nil {
		return passkeySignIn{err: p.internal("rate limit", err)}
	}
	if wait > 0 {
		countRateLimited(failedIPKey(ip))
		return passkeySignIn{err: tooMany(wait)}
	}
	ev := auditEvent{Channel: channelPasskey}
	fail := func(reason string) passkeySignIn {
		p.logger.Debug("passkey sign-in refused", zap.String("reason", reason))
		return passkeySignIn{err: p.passkeyFailed(ctx, ip, ev)}
	}
	// The challenge is spent by the first finish that presents it,
	// whatever the outcome: a refusal spends it here, a success in the
	// sign-in's own transaction below.
	var ceremony Ceremony
	refuse := func(reason string) passkeySignIn {
		if _, err := p.store.SpendChallenge(ctx, ceremony); err != nil {
			return passkeySignIn{err: p.internal("spending challenge", err)}
		}
		return fail(reason)
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(body)
	if err != nil {
		return fail(describe(err))
	}
	pc := p.Passkeys
	ch, err := base64.RawURLEncoding.DecodeString(parsed.Response.CollectedClientData.Challenge)
	if err != nil {
		return fail("challenge not base64url")
	}
	t := now()
	exp, ok := pc.checkLoginChallenge(p.Realm, ch, t)
	if !ok {
		return fail("challenge not this realm's sign-in challenge, or expired")
	}
	ceremony = Ceremony{ChallengeHash: challengeHash(ch), Kind: ceremonyLogin, Realm: p.Realm, ExpiresAt: exp}
	ev.PasskeyID = base64.RawURLEncoding.EncodeToString(parsed.RawID)
	pk, err := p.store.PasskeyByID(ctx, p.Realm, parsed.RawID)
	if errors.Is(err, ErrNotFound) {
		res := refuse("unknown passkey")
		res.unknown = ev.PasskeyID
		return res
	}
	if err != nil {
		return passkeySignIn{err: p.internal("reading passkey", err)}
	}
	ev.UserID = pk.UserID
	u, err := p.store.UserByID(ctx, pk.UserID)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return passkeySignIn{err: p.internal("reading user", err)}
	}
	// Whoever may not sign in with a code may not with a passkey: the
	// answer is an unknown passkey's.
	if err != nil || u.Realm != p.Realm || u.Disabled || !p.access.admitsUser(u) {
		return refuse("user may not sign in")
	}
	cred := pk.credential()
	// The backup-eligible flag may change after registration (iCloud sets
	// it late); the library would refuse that, so it is taken as presented.
	flags := parsed.Response.AuthenticatorData.Flags
	cred.Flags.BackupEligible = flags.HasBackupEligible()
	owner := passkeyUser{u: u, creds: []webauthn.Credential{cred}}
	session := webauthn.SessionData{
		Challenge:        parsed.Response.CollectedClientData.Challenge,
		RelyingPartyID:   pc.RPID,
		UserVerification: protocol.UserVerificationRequirement(pc.UserVerification),
	}
	// The library checks type, challenge, origin, RP ID hash, UP, UV when
	// required, the signature and that the user handle is the owner's.
	_, _, err = pc.wa.ValidatePasskeyLogin(func(_, _ []byte) (webauthn.User, error) { return owner, nil }, session, parsed)
	if err != nil {
		return refuse(describe(err))
	}
	s, refresh, e := p.sessionFor(r, u.ID)
	if e != nil {
		return passkeySignIn{err: e}
	}
	count := parsed.Response.AuthenticatorData.Counter
	spent, err := p.store.PasskeySignIn(ctx, ceremony, pk.ID, count, flags.HasBackupEligible(), flags.HasBackupState(), s, opaqueHash(refresh), t)
	switch {
	case err == nil && !spent:
		return fail("challenge already used")
	case errors.Is(err, ErrCounterRegressed):
		// Two authenticators hold this key, or an assertion was replayed
		// past its challenge. The stored counter stays as it was, so the
		// genuine one keeps working and every copy keeps failing.
		p.logger.Warn("passkey counter went backwards: possible clone", zap.String("user", u.ID), zap.String("passkey", ev.PasskeyID),
			zap.Uint32("stored", pk.SignCount), zap.Uint32("presented", count))
		p.audit(ctx, auditPasskeyCloneSuspected, ev)
		return fail("counter did not move forward")
	case errors.Is(err, ErrNotFound):
		return fail("passkey deleted meanwhile")
	case err != nil:
		return passkeySignIn{err: p.internal("recording passkey use", err)}
	}
	return passkeySignIn{user: u, passkey: pk, session: s, refresh: refresh}
}

// passkeyFailed counts a failed passkey sign-in from ip: against the
// client's budget of failures, in the metrics and in the audit log. It
// answers the one failure, or 429 when the budget is spent.
func (p *Passwordless) passkeyFailed(ctx context.Context, ip string, ev auditEvent) *apiError {
	wait, err := p.store.Hit(ctx, p.failedIPLimit(ip), now())
	if err != nil {
		return p.internal("rate limit", err)
	}
	if wait > 0 {
		countRateLimited(failedIPKey(ip))
		return tooMany(wait)
	}
	metrics.logins.WithLabelValues(string(channelPasskey), loginInvalid).Inc()
	p.audit(ctx, auditLoginFailed, ev)
	return passkeyFailure
}

// passkeyLoggedIn records a successful passkey sign-in in session sid.
func (p *Passwordless) passkeyLoggedIn(ctx context.Context, res passkeySignIn, sid string) {
	metrics.logins.WithLabelValues(string(channelPasskey), loginSuccess).Inc()
	p.audit(ctx, auditLogin, auditEvent{UserID: res.user.ID, Channel: channelPasskey, SessionID: sid,
		PasskeyID: base64.RawURLEncoding.EncodeToString(res.passkey.ID)})
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

// The browser side: the account page, and passkeys on the sign-in page.

//go:embed pages/passkeys.js
var passkeysScript string

type accountPasskey struct {
	ID, Name, Created, LastUsed string
	BackedUp                    bool
}

// serveAccount is GET {prefix}/account: the signed-in user's aliases and
// passkeys. A visitor who is not signed in is sent to sign in first.
func (p *Passwordless) serveAccount(w http.ResponseWriter, r *http.Request) *apiError {
	c, _, _ := p.authenticate(r)
	if c == nil {
		http.Redirect(w, r, p.Prefix+"/login?next="+url.QueryEscape(p.Prefix+"/account"), http.StatusFound)
		return nil
	}
	u, err := p.store.UserByID(r.Context(), c.Subject)
	if err != nil {
		return p.internal("reading user", err)
	}
	v := p.pages.view(r)
	v.Prefix, v.Action, v.Next = p.Prefix, p.Prefix+"/logout", "/"
	v.Email, v.Mobile, v.Passkeys, v.Script = u.Email, u.Mobile, p.Passkeys != nil, template.JS(passkeysScript)
	if v.Passkeys {
		list, err := p.store.Passkeys(r.Context(), u.ID)
		if err != nil {
			return p.internal("listing passkeys", err)
		}
		for _, pk := range list {
			ap := accountPasskey{ID: base64.RawURLEncoding.EncodeToString(pk.ID), Name: pk.Name,
				Created: pk.CreatedAt.UTC().Format("2006-01-02"), BackedUp: pk.BackupState}
			if !pk.LastUsedAt.IsZero() {
				ap.LastUsed = pk.LastUsedAt.UTC().Format("2006-01-02 15:04 UTC")
			}
			v.List = append(v.List, ap)
		}
	}
	// Its scripts may call this site's API (connect-src), nothing else.
	if err := p.pages.render(w, http.StatusOK, "account", v, "connect-src 'self'; form-action 'self'; "); err != nil {
		return p.internal("rendering account page", err)
	}
	return nil
}

// passkeyPage is what the sign-in page needs to offer passkeys.
type passkeyPage struct {
	On      bool
	Prefix  string
	RPID    string
	Unknown string // a credential id to signal as unknown
	Script  template.JS
}

func (p *Passwordless) passkeyPage() passkeyPage {
	if p.Passkeys == nil {
		return passkeyPage{}
	}
	return passkeyPage{On: true, Prefix: p.Prefix, RPID: p.Passkeys.RPID, Script: template.JS(passkeysScript)}
}

// passkeyForm is POST {prefix}/login with a `passkey` field: the
// assertion the page's script got, for a session cookie as a code gives.
func (p *Passwordless) passkeyForm(w http.ResponseWriter, r *http.Request, v pageView, assertion string) *apiError {
	if p.Passkeys == nil {
		return p.loginError(w, r, v, passkeyFailure)
	}
	ctx := context.WithoutCancel(r.Context())
	res := p.passkeyLogin(ctx, r, []byte(assertion))
	if res.err != nil {
		v.Passkey.Unknown = res.unknown
		return p.loginError(w, r, v, res.err)
	}
	s := res.session
	// As for a code: the cookie's token lives as long as its session.
	tok, e := p.accessToken(res.user, s.ID, s.ExpiresAt.Sub(now()))
	if e != nil {
		return e
	}
	p.passkeyLoggedIn(ctx, res, s.ID)
	http.SetCookie(w, p.sessionCookie(r, tok, s.ExpiresAt))
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, v.Next, http.StatusSeeOther)
	return nil
}

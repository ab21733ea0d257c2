package passwordless

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/protocol/webauthncose"
	"github.com/go-webauthn/webauthn/webauthn"
	"go.uber.org/zap"
)

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

func (pu passkeyUser) WebAuthnDisplayName() string { return pu.WebAuthnName() }

func (pu passkeyUser) WebAuthnCredentials() []webauthn.Credential { return pu.creds }

// credential is pk as the library needs it to check an assertion.
func (pk Passkey) credential() webauthn.Credential {
	return webauthn.Credential{
		ID: pk.ID, PublicKey: pk.PublicKey,
		Flags:         webauthn.CredentialFlags{BackupEligible: pk.BackupEligible, BackupState: pk.BackupState},
		Authenticator: webauthn.Authenticator{AAGUID: pk.AAGUID, SignCount: pk.SignCount},
	}
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
	// The passkey, its owner and the client's budget of failures come in
	// one read. A client over its budget gets 429 before the signature is
	// checked; an unknown passkey's refusal counts against the budget
	// (passkeyFailed), so it answers 429 all the same.
	pk, u, wait, err := p.store.PasskeyOwner(ctx, p.Realm, parsed.RawID, p.failedIPLimit(ip), t)
	if errors.Is(err, ErrNotFound) {
		res := refuse("unknown passkey")
		res.unknown = ev.PasskeyID
		return res
	}
	if err != nil {
		return passkeySignIn{err: p.internal("reading passkey", err)}
	}
	if wait > 0 {
		countRateLimited(failedIPKey(ip))
		return passkeySignIn{err: tooMany(wait)}
	}
	ev.UserID = pk.UserID
	// Whoever may not sign in with a code may not with a passkey: the
	// answer is an unknown passkey's.
	if u.Realm != p.Realm || u.Disabled || !p.access.admitsUser(u) {
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

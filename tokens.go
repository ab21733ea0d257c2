package passwordless

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/golang-jwt/jwt/v5"
)

// newCode returns length random decimal digits from crypto/rand.
func newCode(length int) (string, error) {
	limit := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(length)), nil)
	n, err := rand.Int(rand.Reader, limit)
	if err != nil {
		return "", fmt.Errorf("generating code: %w", err)
	}
	return fmt.Sprintf("%0*d", length, n), nil
}

// codeHash is what is stored for a code. The alias and purpose are part of
// the MAC, so a stolen table row is useless for any other alias or purpose,
// and without the key the 10^6 codes cannot be brute-forced offline.
func codeHash(key []byte, alias, purpose, code string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(purpose))
	m.Write([]byte{0})
	m.Write([]byte(alias))
	m.Write([]byte{0})
	m.Write([]byte(code))
	return m.Sum(nil)
}

// opaqueHash is how refresh tokens are stored: they are 256 random bits,
// so a plain SHA-256 is enough to make a stolen table useless.
func opaqueHash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

func randomBytes(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("reading random bytes: %w", err)
	}
	return b, nil
}

// randomID returns 128 random bits, URL-safe.
func randomID() (string, error) {
	b, err := randomBytes(16)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// randomToken returns 256 random bits, URL-safe.
func randomToken() (string, error) {
	b, err := randomBytes(32)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// Claims are the claims of an access token.
type Claims struct {
	Email     string `json:"email,omitempty"`
	Mobile    string `json:"mobile,omitempty"`
	SessionID string `json:"sid"`
	// Roles the user held when the token was issued; protected routes
	// use the current ones.
	Roles []string `json:"roles,omitempty"`
	jwt.RegisteredClaims
}

// jwtKey is one key of the key set; the first one signs.
type jwtKey struct {
	kid     string
	private any // ed25519.PrivateKey, *ecdsa.PrivateKey, *rsa.PrivateKey or []byte (HS256)
	public  any // what verifies: the public key, or the same []byte
}

// keySet signs with its first key and verifies with any of them, by kid.
type keySet struct {
	method jwt.SigningMethod
	keys   []jwtKey
	parser *jwt.Parser
}

// loadKeys builds the key set the JWT config asks for. Without secrets or
// key files it generates a key once and keeps it in the store, so tokens
// survive restarts and are shared by every instance on that store.
func loadKeys(ctx context.Context, cfg *JWTConfig, store Store, realm string) (*keySet, error) {
	ks := &keySet{method: jwt.GetSigningMethod(cfg.Algorithm)}
	if ks.method == nil {
		return nil, fmt.Errorf("unsupported JWT algorithm %q", cfg.Algorithm)
	}
	switch {
	case cfg.Algorithm == "HS256":
		for _, s := range cfg.Secrets {
			// The kid names the secret without revealing it.
			sum := sha256.Sum256(append([]byte("caddy-passwordless kid\x00"), s...))
			ks.keys = append(ks.keys, jwtKey{kid: base64.RawURLEncoding.EncodeToString(sum[:12]), private: []byte(s), public: []byte(s)})
		}
	case len(cfg.KeyFiles) > 0:
		for _, f := range cfg.KeyFiles {
			data, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("reading JWT key: %w", err)
			}
			k, err := parsePrivateKey(data, cfg.Algorithm)
			if err != nil {
				return nil, fmt.Errorf("JWT key %s: %w", f, err)
			}
			ks.keys = append(ks.keys, k)
		}
	default:
		der, err := store.Secret(ctx, realmKey(realm, "jwt_key:"+cfg.Algorithm), func() ([]byte, error) { return generateKey(cfg.Algorithm) })
		if err != nil {
			return nil, err
		}
		k, err := parsePrivateKey(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), cfg.Algorithm)
		if err != nil {
			return nil, fmt.Errorf("stored JWT key: %w", err)
		}
		ks.keys = append(ks.keys, k)
	}
	opts := []jwt.ParserOption{
		// Pinning the one configured algorithm stops alg=none and
		// RS256-with-an-HMAC-key confusion before any key is touched.
		jwt.WithValidMethods([]string{cfg.Algorithm}),
		jwt.WithLeeway(30 * time.Second),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(func() time.Time { return now() }),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	ks.parser = jwt.NewParser(opts...)
	return ks, nil
}

func generateKey(alg string) ([]byte, error) {
	var priv any
	var err error
	switch alg {
	case "EdDSA":
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	case "ES256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "RS256":
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		return nil, fmt.Errorf("cannot generate a key for %s", alg)
	}
	if err != nil {
		return nil, err
	}
	return x509.MarshalPKCS8PrivateKey(priv)
}

// parsePrivateKey reads a PEM private key and refuses one that does not fit
// the algorithm, so a configuration mistake fails at start, not per request.
func parsePrivateKey(data []byte, alg string) (jwtKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return jwtKey{}, errors.New("no PEM block found")
	}
	var priv any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		priv, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		priv, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		priv, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return jwtKey{}, fmt.Errorf("unsupported PEM block %q (want a private key)", block.Type)
	}
	if err != nil {
		return jwtKey{}, err
	}
	ok := false
	switch k := priv.(type) {
	case ed25519.PrivateKey:
		ok = alg == "EdDSA"
	case *ecdsa.PrivateKey:
		ok = alg == "ES256" && k.Curve == elliptic.P256()
	case *rsa.PrivateKey:
		ok = alg == "RS256" && k.N.BitLen() >= 2048
	}
	if !ok {
		return jwtKey{}, fmt.Errorf("a %T does not fit algorithm %s", priv, alg)
	}
	pub := priv.(crypto.Signer).Public()
	kid, err := thumbprint(pub)
	if err != nil {
		return jwtKey{}, err
	}
	return jwtKey{kid: kid, private: priv, public: pub}, nil
}

// sign issues a token, or an assertion, with the first key.
func (ks *keySet) sign(c jwt.Claims) (string, error) {
	t := jwt.NewWithClaims(ks.method, c)
	t.Header["kid"] = ks.keys[0].kid
	s, err := t.SignedString(ks.keys[0].private)
	if err != nil {
		return "", fmt.Errorf("signing token: %w", err)
	}
	return s, nil
}

// verify checks signature, algorithm, time and issuer/audience and returns
// the claims. Any failure is just "not valid": the reason is for debug logs.
func (ks *keySet) verify(token string) (*Claims, error) {
	c := new(Claims)
	_, err := ks.parser.ParseWithClaims(token, c, func(t *jwt.Token) (any, error) {
		// RFC 7515 4.1.11: a token with critical extensions this code does
		// not understand must be refused, not have them ignored.
		if _, ok := t.Header["crit"]; ok {
			return nil, errors.New("unsupported crit header")
		}
		kid, _ := t.Header["kid"].(string)
		if kid == "" && len(ks.keys) == 1 {
			return ks.keys[0].public, nil
		}
		for _, k := range ks.keys {
			if k.kid == kid {
				return k.public, nil
			}
		}
		return nil, errors.New("unknown kid")
	})
	if err != nil {
		return nil, err
	}
	if c.Subject == "" || c.SessionID == "" {
		return nil, errors.New("token lacks sub or sid")
	}
	return c, nil
}

// jwk is one public key of the JWK set (RFC 7517).
type jwk struct {
	Kty string `json:"kty"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
}

func publicJWK(pub any) (jwk, error) {
	b64 := base64.RawURLEncoding.EncodeToString
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return jwk{Kty: "OKP", Crv: "Ed25519", X: b64(k)}, nil
	case *ecdsa.PublicKey:
		raw, err := k.Bytes() // 0x04 || X || Y
		if err != nil {
			return jwk{}, err
		}
		return jwk{Kty: "EC", Crv: "P-256", X: b64(raw[1:33]), Y: b64(raw[33:])}, nil
	case *rsa.PublicKey:
		return jwk{Kty: "RSA", N: b64(k.N.Bytes()), E: b64(big.NewInt(int64(k.E)).Bytes())}, nil
	}
	return jwk{}, fmt.Errorf("no JWK form for %T", pub)
}

// thumbprint is the RFC 7638 thumbprint of a public key, used as its kid.
func thumbprint(pub any) (string, error) {
	j, err := publicJWK(pub)
	if err != nil {
		return "", err
	}
	var members string
	switch j.Kty {
	case "OKP":
		members = fmt.Sprintf(`{"crv":%q,"kty":%q,"x":%q}`, j.Crv, j.Kty, j.X)
	case "EC":
		members = fmt.Sprintf(`{"crv":%q,"kty":%q,"x":%q,"y":%q}`, j.Crv, j.Kty, j.X, j.Y)
	case "RSA":
		members = fmt.Sprintf(`{"e":%q,"kty":%q,"n":%q}`, j.E, j.Kty, j.N)
	}
	sum := sha256.Sum256([]byte(members))
	return base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

// jwks returns the public keys as a JWK set; HS256 secrets are never in it.
func (ks *keySet) jwks() ([]byte, error) {
	set := struct {
		Keys []jwk `json:"keys"`
	}{Keys: []jwk{}}
	if ks.method.Alg() != "HS256" {
		for _, k := range ks.keys {
			j, err := publicJWK(k.public)
			if err != nil {
				return nil, err
			}
			j.Kid, j.Alg, j.Use = k.kid, ks.method.Alg(), "sig"
			set.Keys = append(set.Keys, j)
		}
	}
	return json.Marshal(set)
}

// serveJWKS is GET {prefix}/jwks.json: the public keys, for services that
// verify tokens themselves.
func (p *Passwordless) serveJWKS(w http.ResponseWriter, r *http.Request) *apiError {
	body, err := p.keys.jwks()
	if err != nil {
		return p.internal("building JWK set", err)
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Write(body)
	return nil
}

// JWTConfig configures the access tokens.
type JWTConfig struct {
	// `EdDSA` (default), `ES256`, `RS256` or `HS256`.
	Algorithm string `json:"algorithm,omitempty"`
	// HS256 secrets, each at least 32 bytes; the first signs, all verify.
	// Use `{env.JWT_SECRET}`.
	Secrets []string `json:"secrets,omitempty"`
	// PEM private key files for EdDSA, ES256 or RS256; the first signs,
	// all verify (by kid). Default: a key generated once and kept in
	// storage.
	KeyFiles []string `json:"key_files,omitempty"`
	// Access token lifetime. Default: 15m.
	TTL caddy.Duration `json:"ttl,omitempty"`
	// Refresh token lifetime. Default: 720h (30 days).
	RefreshTTL caddy.Duration `json:"refresh_ttl,omitempty"`
	// The `iss` claim, checked on every request when set.
	Issuer string `json:"issuer,omitempty"`
	// The `aud` claim, checked on every request when set.
	Audience string `json:"audience,omitempty"`
}

func (j *JWTConfig) unmarshal(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "algorithm":
			if err := oneArg(d, &j.Algorithm); err != nil {
				return err
			}
			if err := checkJWTAlgorithm(j.Algorithm); err != nil {
				return d.Err(err.Error())
			}
		case "secret":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			j.Secrets = append(j.Secrets, args...)
		case "key_file":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			j.KeyFiles = append(j.KeyFiles, args...)
		case "ttl", "refresh_ttl":
			name := d.Val()
			dur, err := durationArg(d)
			if err != nil {
				return err
			}
			if name == "ttl" {
				j.TTL = caddy.Duration(dur)
			} else {
				j.RefreshTTL = caddy.Duration(dur)
			}
		case "issuer":
			if err := oneArg(d, &j.Issuer); err != nil {
				return err
			}
		case "audience":
			if err := oneArg(d, &j.Audience); err != nil {
				return err
			}
		default:
			return d.Errf("unrecognized jwt subdirective %q", d.Val())
		}
	}
	return nil
}

// provision fills in the defaults and resolves placeholders.
func (j *JWTConfig) provision(env func(*string)) {
	if j.Algorithm == "" {
		j.Algorithm = "EdDSA"
	}
	if j.TTL == 0 {
		j.TTL = caddy.Duration(defaultTokenTTL)
	}
	if j.RefreshTTL == 0 {
		j.RefreshTTL = caddy.Duration(defaultRefreshTTL)
	}
	for i := range j.Secrets {
		env(&j.Secrets[i])
	}
	for i := range j.KeyFiles {
		env(&j.KeyFiles[i])
	}
	env(&j.Issuer)
	env(&j.Audience)
}

func (j *JWTConfig) validate() error {
	if err := checkJWTAlgorithm(j.Algorithm); err != nil {
		return err
	}
	switch j.Algorithm {
	case "HS256":
		if len(j.Secrets) == 0 {
			return errors.New("jwt: HS256 needs a secret")
		}
		if len(j.KeyFiles) > 0 {
			return errors.New("jwt: key_file is not for HS256; use secret")
		}
		for _, s := range j.Secrets {
			// Shorter HMAC keys can be brute-forced offline from any token.
			if len(s) < minHMACSecretLen {
				return fmt.Errorf("jwt: an HS256 secret must be at least %d bytes (one is %d)", minHMACSecretLen, len(s))
			}
		}
	default:
		if len(j.Secrets) > 0 {
			return fmt.Errorf("jwt: secret is for HS256 only; %s uses key_file or a generated key", j.Algorithm)
		}
	}
	if j.TTL < 0 || j.RefreshTTL < 0 {
		return errors.New("jwt: ttl and refresh_ttl must be positive")
	}
	return nil
}

func checkJWTAlgorithm(alg string) error {
	switch alg {
	case "EdDSA", "ES256", "RS256", "HS256":
		return nil
	}
	return fmt.Errorf("jwt algorithm must be EdDSA, ES256, RS256 or HS256, not %q", alg)
}

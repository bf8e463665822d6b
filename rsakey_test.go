package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"math/big"
	"slices"
	"strings"
	"testing"
)

// sameRSAKey compares what decryption and encryption use.
func sameRSAKey(a, b *rsa.PrivateKey) bool {
	return a.N.Cmp(b.N) == 0 && a.E == b.E && a.D.Cmp(b.D) == 0 && len(a.Primes) == 2 && len(b.Primes) == 2 &&
		a.Primes[0].Cmp(b.Primes[0]) == 0 && a.Primes[1].Cmp(b.Primes[1]) == 0 &&
		a.Precomputed.Dp.Cmp(b.Precomputed.Dp) == 0 && a.Precomputed.Dq.Cmp(b.Precomputed.Dq) == 0 &&
		a.Precomputed.Qinv.Cmp(b.Precomputed.Qinv) == 0
}

func TestRSAKeyDER(t *testing.T) {
	k := ctFuzzRSAKey()
	pkcs1 := x509.MarshalPKCS1PrivateKey(k)
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(k)
	pub1 := x509.MarshalPKCS1PublicKey(&k.PublicKey)
	pkix, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)

	for name, parse := range map[string]func([]byte) (*rsa.PrivateKey, error){"pkcs1": parsePKCS1PrivateKey, "pkcs8": parsePKCS8RSAPrivateKey} {
		der := map[string][]byte{"pkcs1": pkcs1, "pkcs8": pkcs8}[name]
		got, err := parse(der)
		if err != nil || !sameRSAKey(got, k) {
			t.Errorf("%s: %v", name, err)
		}
		if _, err := parse(append(bytes.Clone(der), 0)); err == nil || !strings.Contains(err.Error(), "trailing") {
			t.Errorf("%s with a trailing byte: %v", name, err)
		}
	}
	for name, der := range map[string][]byte{"pkcs1": pub1, "pkix": pkix} {
		parse := map[string]func([]byte) (*rsa.PublicKey, error){"pkcs1": parsePKCS1PublicKey, "pkix": parsePKIXRSAPublicKey}[name]
		got, err := parse(der)
		if err != nil || got.N.Cmp(k.N) != 0 || got.E != k.E {
			t.Errorf("public %s: %v", name, err)
		}
	}

	// Other key types and forms are refused with a reason.
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec8, _ := x509.MarshalPKCS8PrivateKey(ec)
	ecPub, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	multi, err := rsa.GenerateMultiPrimeKey(rand.Reader, 3, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tamperedD := *k
	tamperedD.D = new(big.Int).Add(k.D, k.Primes[0]) // any other d
	for _, c := range []struct {
		name, want string
		err        error
	}{
		{"ecdsa pkcs8", "not an RSA key", errOf(parsePKCS8RSAPrivateKey(ec8))},
		{"ecdsa pkix", "not an RSA key", errOf(parsePKIXRSAPublicKey(ecPub))},
		{"multi-prime", "multi-prime", errOf(parsePKCS1PrivateKey(x509.MarshalPKCS1PrivateKey(multi)))},
		{"pkcs8 as pkcs1", "", errOf(parsePKCS1PrivateKey(pkcs8))},
		{"public as private", "", errOf(parsePKCS1PrivateKey(pub1))},
		{"wrong d", "", errOf(parsePKCS1PrivateKey(x509.MarshalPKCS1PrivateKey(&tamperedD)))},
		// A crafted 32768-bit key (N = p·q of two odd randoms, no primes)
		// kept the checks of rsa.Validate busy for 13 s: refused on its size.
		{"32768-bit private", "bits", errOf(parsePKCS1PrivateKey(bigCraftedKey(32768)))},
		{"32768-bit public", "bits", errOf(parsePKCS1PublicKey(x509.MarshalPKCS1PublicKey(&rsa.PublicKey{N: new(big.Int).Lsh(big.NewInt(1), 32767), E: 65537})))},
	} {
		if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("%s: %v, want an error mentioning %q", c.name, c.err, c.want)
		}
	}
}

func errOf[T any](_ T, err error) error { return err }

// bigCraftedKey is PKCS#1 DER with N = p·q of two odd random bits/2-bit
// numbers: it passes the cheap checks and reaches the expensive ones.
func bigCraftedKey(bits int) []byte {
	half := new(big.Int).Lsh(big.NewInt(1), uint(bits/2))
	p, _ := rand.Int(rand.Reader, half)
	q, _ := rand.Int(rand.Reader, half)
	p.SetBit(p, bits/2-1, 1).SetBit(p, 0, 1)
	q.SetBit(q, bits/2-1, 1).SetBit(q, 0, 1)
	n := new(big.Int).Mul(p, q)
	der, err := asn1.Marshal(pkcs1PrivateKey{N: n, E: 65537, D: new(big.Int).Rsh(n, 1), P: p, Q: q})
	if err != nil {
		panic(err)
	}
	return der
}

// FuzzRSAKeyDER holds the parsers to crypto/x509: whatever they accept, x509
// accepts as the same key; whatever x509 accepts as a two-prime RSA key,
// they accept, unless it has trailing bytes or a PKCS#8 version other than 0.
func FuzzRSAKeyDER(f *testing.F) {
	k := ctFuzzRSAKey()
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(k)
	pkix, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	f.Add(uint8(0), x509.MarshalPKCS1PrivateKey(k))
	f.Add(uint8(1), pkcs8)
	f.Add(uint8(2), x509.MarshalPKCS1PublicKey(&k.PublicKey))
	f.Add(uint8(3), pkix)
	f.Add(uint8(3), []byte{0x30, 0x0d, 0x06, 0x09})
	twoPrime := func(v any) bool { k, ok := v.(*rsa.PrivateKey); return ok && len(k.Primes) == 2 }
	samePriv := func(a, b any) bool { return sameRSAKey(a.(*rsa.PrivateKey), b.(*rsa.PrivateKey)) }
	isPub := func(v any) bool { _, ok := v.(*rsa.PublicKey); return ok }
	samePub := func(a, b any) bool {
		x, y := a.(*rsa.PublicKey), b.(*rsa.PublicKey)
		return x.N.Cmp(y.N) == 0 && x.E == y.E
	}
	forms := []struct {
		ours, x509 func([]byte) (any, error)
		usable     func(any) bool      // x509's answer is a key we support
		same       func(a, b any) bool // ours, x509's
		stricter   []string            // our deliberate refusals of what x509 takes
	}{
		{anyKey(parsePKCS1PrivateKey), anyKey(x509.ParsePKCS1PrivateKey), twoPrime, samePriv, []string{"trailing", "version", "bits"}},
		{anyKey(parsePKCS8RSAPrivateKey), x509.ParsePKCS8PrivateKey, twoPrime, samePriv, []string{"trailing", "version", "bits"}},
		{anyKey(parsePKCS1PublicKey), anyKey(x509.ParsePKCS1PublicKey), isPub, samePub, []string{"trailing", "bits"}},
		{anyKey(parsePKIXRSAPublicKey), x509.ParsePKIXPublicKey, isPub, samePub, []string{"trailing", "bits"}},
	}
	f.Fuzz(func(t *testing.T, form uint8, der []byte) {
		// Up to RSA-4096 and some: the checks of a 16384-bit key take a
		// second, which would stall the fuzzer (TestRSAKeyDER covers the bound).
		if len(der) > 4<<10 {
			return
		}
		c := forms[int(form)%len(forms)]
		ours, err := c.ours(der)
		if err != nil && strings.Contains(err.Error(), "bits") {
			return // x509 would spend seconds on the key we refuse for its size
		}
		theirs, xerr := c.x509(der)
		usable := xerr == nil && c.usable(theirs)
		if err == nil && (!usable || !c.same(ours, theirs)) {
			t.Fatalf("accepted what x509 refuses or reads otherwise: %v", xerr)
		}
		if err != nil && usable && !slices.ContainsFunc(c.stricter, func(s string) bool { return strings.Contains(err.Error(), s) }) {
			t.Fatalf("refused a key x509 accepts: %v", err)
		}
	})
}

// anyKey makes a typed parser fit the table of FuzzRSAKeyDER.
func anyKey[K any](parse func([]byte) (K, error)) func([]byte) (any, error) {
	return func(der []byte) (any, error) {
		k, err := parse(der)
		if err != nil {
			return nil, err
		}
		return k, nil
	}
}

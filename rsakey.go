// rsakey.go reads the DER inside PEM RSA keys: PKCS#1 and PKCS#8 private
// keys, PKCS#1 and PKIX public keys. It replaces crypto/x509, which links
// net, ECDSA, Ed25519 and more into a setuid binary that needs none of them:
// their package initialisation cost every launch about 0.1 ms, and the
// binary 0.6 MiB. The checks are x509's (go1.26) or stricter: two primes
// only, at most maxRSABits, no trailing bytes, PKCS#8 version 0, and the key
// goes through rsa.PrivateKey.Validate. The tests hold it to x509 on generated and fuzzed keys.
package main

import (
	"crypto/rsa"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
)

// oidRSAEncryption is rsaEncryption, 1.2.840.113549.1.1.1 (RFC 8017 A.1).
var oidRSAEncryption = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}

// asn1NULL is the DER of NULL, the parameters of rsaEncryption.
var asn1NULL = []byte{0x05, 0x00}

type pkcs1PrivateKey struct { // RFC 8017 A.1.2
	Version int
	N       *big.Int
	E       int
	D       *big.Int
	P       *big.Int
	Q       *big.Int
	Dp      *big.Int `asn1:"optional"`
	Dq      *big.Int `asn1:"optional"`
	Qinv    *big.Int `asn1:"optional"`
}

type pkcs1PublicKey struct { // RFC 8017 A.1.1
	N *big.Int
	E int
}

type algorithmIdentifier struct { // RFC 5280 4.1.1.2
	Algorithm  asn1.ObjectIdentifier
	Parameters asn1.RawValue `asn1:"optional"`
}

type pkcs8PrivateKey struct { // RFC 5208 5; attributes are refused as trailing data
	Version    int
	Algorithm  algorithmIdentifier
	PrivateKey []byte
}

type subjectPublicKeyInfo struct { // RFC 5280 4.1
	Algorithm algorithmIdentifier
	PublicKey asn1.BitString
}

// unmarshalDER decodes one DER value that fills der exactly.
func unmarshalDER(der []byte, v any) error {
	rest, err := asn1.Unmarshal(der, v)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return errors.New("trailing data after the key")
	}
	return nil
}

func parsePKCS1PrivateKey(der []byte) (*rsa.PrivateKey, error) {
	var k pkcs1PrivateKey
	if err := unmarshalDER(der, &k); err != nil {
		return nil, err
	}
	switch {
	case k.Version == 1:
		return nil, errors.New("multi-prime RSA keys are not supported")
	case k.Version != 0:
		return nil, errors.New("unsupported private key version")
	case k.N.Sign() <= 0 || k.D.Sign() <= 0 || k.P.Sign() <= 0 || k.Q.Sign() <= 0 || k.E <= 0,
		k.Dp != nil && k.Dp.Sign() <= 0, k.Dq != nil && k.Dq.Sign() <= 0, k.Qinv != nil && k.Qinv.Sign() <= 0:
		return nil, errors.New("private key contains zero or negative value")
	}
	if k.N.BitLen() > maxRSABits {
		return nil, fmt.Errorf("RSA keys over %d bits are not supported", maxRSABits)
	}
	key := &rsa.PrivateKey{
		PublicKey: rsa.PublicKey{N: k.N, E: k.E},
		D:         k.D,
		Primes:    []*big.Int{k.P, k.Q},
	}
	key.Precomputed.Dp, key.Precomputed.Dq, key.Precomputed.Qinv = k.Dp, k.Dq, k.Qinv
	key.Precompute()
	if err := key.Validate(); err != nil {
		return nil, err
	}
	return key, nil
}

func parsePKCS8RSAPrivateKey(der []byte) (*rsa.PrivateKey, error) {
	var k pkcs8PrivateKey
	if err := unmarshalDER(der, &k); err != nil {
		return nil, err
	}
	if k.Version != 0 {
		return nil, errors.New("unsupported PKCS#8 version")
	}
	if !k.Algorithm.Algorithm.Equal(oidRSAEncryption) {
		return nil, errors.New("not an RSA key")
	}
	key, err := parsePKCS1PrivateKey(k.PrivateKey)
	if err != nil {
		return nil, errors.New("RSA key inside PKCS#8: " + err.Error())
	}
	return key, nil
}

func parsePKCS1PublicKey(der []byte) (*rsa.PublicKey, error) {
	var k pkcs1PublicKey
	if err := unmarshalDER(der, &k); err != nil {
		return nil, err
	}
	if k.N.Sign() <= 0 || k.E <= 0 {
		return nil, errors.New("public key contains zero or negative value")
	}
	if k.E > 1<<31-1 {
		return nil, errors.New("public key contains large public exponent")
	}
	if k.N.BitLen() > maxRSABits {
		return nil, fmt.Errorf("RSA keys over %d bits are not supported", maxRSABits)
	}
	return &rsa.PublicKey{N: k.N, E: k.E}, nil
}

func parsePKIXRSAPublicKey(der []byte) (*rsa.PublicKey, error) {
	var k subjectPublicKeyInfo
	if err := unmarshalDER(der, &k); err != nil {
		return nil, err
	}
	if !k.Algorithm.Algorithm.Equal(oidRSAEncryption) {
		return nil, errors.New("not an RSA key")
	}
	if string(k.Algorithm.Parameters.FullBytes) != string(asn1NULL) {
		return nil, errors.New("RSA key missing NULL parameters")
	}
	if k.PublicKey.BitLength%8 != 0 {
		return nil, errors.New("public key is not a whole number of bytes")
	}
	return parsePKCS1PublicKey(k.PublicKey.RightAlign())
}

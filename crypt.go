// crypt.go owns the keys of encrypted images and where their plaintext lives:
// key sources (--pem-path, --passphrase, MINIRUN_/APPTAINER_ENCRYPTION_*), the
// RSA-OAEP key message of PEM images, unlocking under the admin's KDF caps, the
// choice of backend, and the sealed-memfd backend (spec images-and-encryption §3.3, §4).
package main

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/pem"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The variables of spec §4.1, in the order they are tried after the flags.
const (
	envMinirunPEMPath      = "MINIRUN_ENCRYPTION_PEM_PATH"
	envMinirunPassphrase   = "MINIRUN_ENCRYPTION_PASSPHRASE"
	envApptainerPEMPath    = "APPTAINER_ENCRYPTION_PEM_PATH"
	envApptainerPassphrase = "APPTAINER_ENCRYPTION_PASSPHRASE"
)

const (
	maxKeyFileSize   = 8 << 20  // security.md R10
	maxKeyMessage    = 64 << 10 // an RSA-16384 message is about 3 KiB
	maxRSAKeyDER     = 16 << 10 // an RSA-16384 PKCS#1 private key is about 9.4 KiB
	minRSABits       = 2048
	maxRSABits       = 16384 // key checks grow with the cube of the size: a crafted 32768-bit key took 13 s
	pemPassphraseLen = 64    // random LUKS passphrase of PEM-mode images
	memfdPlainName   = "minirun-plain"
	oaepOverhead     = 2*sha256.Size + 2 // RSA-OAEP-SHA256 fits k − 66 bytes per block
	allSeals         = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE | unix.F_SEAL_SEAL
)

// keySource is where the key for an encrypted image comes from: a PEM key
// file, a terminal prompt, or a passphrase taken from the environment.
type keySource struct {
	origin     string // for messages: "--pem-path", "MINIRUN_ENCRYPTION_PASSPHRASE", …
	pemPath    string
	prompt     bool
	passphrase string
}

// pickKeySource applies spec §4.1: --pem-path, --passphrase, then the
// variables, PEM before passphrase and MINIRUN_ before APPTAINER_; the first
// present wins. A variable set to the empty string counts as absent.
func pickKeySource(pemPath string, prompt bool, env []string) (keySource, bool) {
	switch {
	case pemPath != "":
		return keySource{origin: "--pem-path", pemPath: pemPath}, true
	case prompt:
		return keySource{origin: "--passphrase", prompt: true}, true
	}
	for _, name := range []string{envMinirunPEMPath, envMinirunPassphrase, envApptainerPEMPath, envApptainerPassphrase} {
		v, ok := lookEnv(env, name)
		if !ok || v == "" {
			continue
		}
		if strings.HasSuffix(name, "_PEM_PATH") {
			return keySource{origin: name, pemPath: v}, true
		}
		return keySource{origin: name, passphrase: v}, true
	}
	return keySource{}, false
}

// secretFrom copies b into locked memory; the caller wipes b itself.
func secretFrom(b []byte) (*secretBuf, error) {
	s, err := newSecretBuf(len(b))
	if err != nil {
		return nil, err
	}
	copy(s.bytes(), b)
	return s, nil
}

// --- terminal -----------------------------------------------------------------

// openTerminal opens the controlling terminal. Prompts never use stdin or
// stdout, which may be pipes of the caller's job.
func openTerminal(why string) (int, error) {
	fd, err := unix.Open("/dev/tty", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, failf(eUsage, "%s needs a terminal (open /dev/tty: %v); give the key through the environment instead", why, err)
	}
	return fd, nil
}

// readPassphraseFrom prints prompt on the terminal tty and reads one line with
// echo off. The bytes are kept exactly, up to the line end. The read is
// bounded: a caller who turns line mode off and types without end gets an
// error after 514 bytes, not a root process that grows (term.ReadPassword
// has no limit and waits through end-of-file).
func readPassphraseFrom(tty int, prompt string) (*secretBuf, error) {
	saved, err := unix.IoctlGetTermios(tty, unix.TCGETS)
	if err != nil {
		return nil, failf(eUsage, "read passphrase: the terminal does not answer: %v", err)
	}
	quiet := *saved
	quiet.Lflag &^= unix.ECHO | unix.ECHONL
	quiet.Lflag |= unix.ICANON | unix.ISIG
	quiet.Iflag |= unix.ICRNL
	// Signals a person sends at a prompt (^C, a hang-up, kill) must not
	// leave the terminal without echo. They are caught while echo is off.
	// A caught hang-up is never given back: whether the read sees the hung
	// up terminal first or the signal comes first, the run ends the same
	// way, with one error and status 255, and the process exits soon after.
	// One the caller's shell left ignored (nohup, a background job) stays so.
	sigs := make(chan os.Signal, 1)
	for _, sig := range []os.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM} {
		if !signal.Ignored(sig) {
			signal.Notify(sigs, sig)
		}
	}
	if err := unix.IoctlSetTermios(tty, unix.TCSETS, &quiet); err != nil {
		signal.Stop(sigs)
		return nil, failf(eUsage, "read passphrase: cannot turn echo off: %v", err)
	}
	restore := func() {
		unix.IoctlSetTermios(tty, unix.TCSETS, saved)
		unix.Write(tty, []byte("\n"))
	}
	unix.Write(tty, []byte(prompt))

	buf, err := newSecretBuf(luksMaxPassphrase + 2) // the line, its newline, one byte too many
	if err != nil {
		restore()
		return nil, err
	}
	b, n := buf.bytes(), 0
	fail := func(e error) (*secretBuf, error) {
		buf.wipe()
		restore()
		return nil, e
	}
	for {
		select {
		case sig := <-sigs:
			if sig != syscall.SIGHUP {
				// ^C or kill: the terminal back first, then die of the
				// signal as the sender asked (the status says which).
				buf.wipe()
				restore()
				signal.Reset(sig)
				unix.Tgkill(unix.Getpid(), unix.Gettid(), sig.(syscall.Signal))
				return nil, failf(eUsage, "read passphrase from the terminal: %v at the prompt", sig)
			}
			return fail(failf(eUsage, "read passphrase from the terminal: %v at the prompt", sig))
		default:
		}
		// The poll wakes for a line, the end of input or a hang-up; its
		// timeout is how soon a caught signal is seen (the signal handler
		// restarts a blocked read, so the read alone would not notice).
		ready := []unix.PollFd{{Fd: int32(tty), Events: unix.POLLIN}}
		if _, err := unix.Poll(ready, 50); err != nil && err != unix.EINTR {
			return fail(failf(eUsage, "read passphrase from the terminal: %v", err))
		}
		if ready[0].Revents == 0 {
			continue
		}
		m, err := unix.Read(tty, b[n:])
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		if err != nil || m == 0 {
			if err == nil {
				return fail(failf(eUsage, "read passphrase from the terminal: end of input before a newline"))
			}
			return fail(failf(eUsage, "read passphrase from the terminal: %v", err))
		}
		n += m
		if end := bytes.IndexByte(b[:n], '\n'); end >= 0 {
			n = end
			break
		}
		if n == len(b) {
			return fail(failf(eUsage, "passphrase longer than %d bytes", luksMaxPassphrase))
		}
	}
	restore()
	signal.Stop(sigs)
	if n > luksMaxPassphrase {
		buf.wipe()
		return nil, failf(eUsage, "passphrase longer than %d bytes", luksMaxPassphrase)
	}
	clear(b[n:])
	buf.n = n
	return buf, nil
}

// promptPassphrase asks once, for running image name.
func promptPassphrase(name string) (*secretBuf, error) {
	tty, err := openTerminal("--passphrase")
	if err != nil {
		return nil, err
	}
	defer unix.Close(tty)
	return readPassphraseFrom(tty, "Enter passphrase for "+escapeText(name)+": ")
}

// promptNewPassphrase asks twice, for a build; the passphrase must be non-empty.
func promptNewPassphrase() (*secretBuf, error) {
	tty, err := openTerminal("--passphrase")
	if err != nil {
		return nil, err
	}
	defer unix.Close(tty)
	first, err := readPassphraseFrom(tty, "Enter encryption passphrase: ")
	if err != nil {
		return nil, err
	}
	if len(first.bytes()) == 0 {
		first.wipe()
		return nil, failf(eUsage, "the encryption passphrase must not be empty")
	}
	second, err := readPassphraseFrom(tty, "Retype encryption passphrase: ")
	if err != nil {
		first.wipe()
		return nil, err
	}
	defer second.wipe()
	if !bytes.Equal(first.bytes(), second.bytes()) {
		first.wipe()
		return nil, failf(eUsage, "the passphrases do not match")
	}
	return first, nil
}

// --- PEM keys and the key message ---------------------------------------------------

// readKeyFile reads a key file: a regular file of at most 8 MiB, opened without
// following /proc magic links. In a setuid launch it runs inside asCaller, so the
// open is the caller's (R1).
func readKeyFile(path string) ([]byte, error) {
	fd, err := unix.Openat2(unix.AT_FDCWD, path, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOCTTY | unix.O_NONBLOCK,
		Resolve: unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, openError("key file", path, err)
	}
	f := fileFromFD(fd, path)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, failf(eSystem, "stat key file %s: %w", escapeText(path), err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, failf(eUsage, "key file %s is not a regular file", escapeText(path))
	}
	if st.Size > maxKeyFileSize {
		return nil, failf(eUsage, "key file %s is larger than %d MiB", escapeText(path), maxKeyFileSize>>20)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, failf(eSystem, "read key file %s: %w", escapeText(path), err)
	}
	if len(data) > maxKeyFileSize {
		clear(data)
		return nil, failf(eUsage, "key file %s is larger than %d MiB", escapeText(path), maxKeyFileSize>>20)
	}
	return data, nil
}

// pemKeyBlocks yields the PEM blocks of data in order.
func pemKeyBlocks(data []byte, yield func(*pem.Block) bool) {
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil || !yield(b) {
			return
		}
	}
}

// parseRSAPrivateKeyPEM takes the first private key in a PEM file: PKCS#1
// "RSA PRIVATE KEY" or PKCS#8 "PRIVATE KEY" holding RSA (spec §3.3).
func parseRSAPrivateKeyPEM(data []byte, name string) (key *rsa.PrivateKey, err error) {
	n := escapeText(name)
	defer func() {
		if p := recover(); p != nil {
			key, err = nil, failf(eUsage, "private key %s: malformed", n)
		}
	}()
	err = failf(eUsage, "%s holds no RSA private key in PEM format (RSA PRIVATE KEY or PRIVATE KEY)", n)
	pemKeyBlocks(data, func(b *pem.Block) bool {
		switch {
		case b.Type == "ENCRYPTED PRIVATE KEY" || strings.Contains(b.Headers["Proc-Type"], "ENCRYPTED"):
			err = failf(eUsage, "private key %s is encrypted: encrypted private keys are not supported", n)
		case b.Type == "OPENSSH PRIVATE KEY":
			err = failf(eUsage, "private key %s is in OpenSSH format; convert it with ssh-keygen -p -m pem -f FILE", n)
		case b.Type != "RSA PRIVATE KEY" && b.Type != "PRIVATE KEY":
			return true // certificates, parameters: look further
		case len(b.Bytes) > maxRSAKeyDER:
			err = failf(eUsage, "private key %s is larger than any supported RSA key", n)
		case b.Type == "RSA PRIVATE KEY":
			k, perr := parsePKCS1PrivateKey(b.Bytes)
			key, err = k, keyParseError(perr, "private key", n)
		default:
			k, perr := parsePKCS8RSAPrivateKey(b.Bytes)
			key, err = k, keyParseError(perr, "private key", n)
		}
		return false
	})
	if err != nil {
		return nil, err
	}
	return key, nil
}

// parseRSAPublicKeyPEM takes the first public key in a PEM file: PKCS#1 "RSA
// PUBLIC KEY" (Apptainer's recipe) or PKIX "PUBLIC KEY", of at least 2048 bits.
func parseRSAPublicKeyPEM(data []byte, name string) (key *rsa.PublicKey, err error) {
	n := escapeText(name)
	defer func() {
		if p := recover(); p != nil {
			key, err = nil, failf(eUsage, "public key %s: malformed", n)
		}
	}()
	err = failf(eUsage, "%s holds no RSA public key in PEM format (RSA PUBLIC KEY or PUBLIC KEY)", n)
	pemKeyBlocks(data, func(b *pem.Block) bool {
		switch {
		case strings.HasSuffix(b.Type, "PRIVATE KEY"):
			err = failf(eUsage, "%s holds a private key; build encrypts with the public key (ssh-keygen -f KEY.pub -e -m pem)", n)
		case b.Type != "RSA PUBLIC KEY" && b.Type != "PUBLIC KEY":
			return true
		case len(b.Bytes) > maxRSAKeyDER:
			err = failf(eUsage, "public key %s is larger than any supported RSA key", n)
		case b.Type == "RSA PUBLIC KEY":
			k, perr := parsePKCS1PublicKey(b.Bytes)
			key, err = k, keyParseError(perr, "public key", n)
		default:
			k, perr := parsePKIXRSAPublicKey(b.Bytes)
			key, err = k, keyParseError(perr, "public key", n)
		}
		return false
	})
	if err != nil {
		return nil, err
	}
	if key.N.BitLen() < minRSABits {
		return nil, failf(eUsage, "public key %s has %d bits; at least %d are required", n, key.N.BitLen(), minRSABits)
	}
	return key, nil
}

func keyParseError(err error, what, name string) error {
	if err == nil {
		return nil
	}
	return failf(eUsage, "%s %s: %v", what, name, err)
}

// wipeRSAKey overwrites what it can of a private key once it has been used.
// big.Int words may have been copied by the arithmetic; this is best effort.
func wipeRSAKey(k *rsa.PrivateKey) {
	if k == nil {
		return
	}
	if k.D != nil {
		clear(k.D.Bits())
	}
	for _, p := range k.Primes {
		clear(p.Bits())
	}
	k.Precomputed = rsa.PrecomputedValues{}
}

// encryptKeyMessage makes the crypto-message object of a PEM image (spec §3.3):
// pass encrypted with RSA-OAEP (SHA-256 for OAEP and MGF1, empty label) in
// blocks of k − 66 bytes, the concatenation wrapped in a DER OCTET STRING, PEM
// type "MESSAGE" without headers.
func encryptKeyMessage(pass []byte, pub *rsa.PublicKey) ([]byte, error) {
	chunk := pub.Size() - oaepOverhead
	if chunk <= 0 || len(pass) == 0 {
		return nil, failf(eInternal, "key message: %d-byte key for a %d-byte passphrase", pub.Size(), len(pass))
	}
	var ct []byte
	for off := 0; off < len(pass); off += chunk {
		block, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, pass[off:min(off+chunk, len(pass))], nil)
		if err != nil {
			return nil, failf(eSystem, "encrypt the key message: %w", err)
		}
		ct = append(ct, block...)
	}
	der, err := asn1.Marshal(ct)
	if err != nil {
		return nil, failf(eInternal, "encode the key message: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "MESSAGE", Bytes: der}), nil
}

// decryptKeyMessage recovers the LUKS passphrase from a key message. Readers
// accept any whole number of k-byte blocks (Apptainer chunks by k − 66). A key
// that does not fit the message is E_AUTH; a malformed message is E_IMAGE.
func decryptKeyMessage(msg []byte, priv *rsa.PrivateKey) (pass *secretBuf, err error) {
	defer func() {
		if p := recover(); p != nil {
			pass.wipe()
			pass, err = nil, failf(eImage, "RSA-OAEP key message: malformed")
		}
	}()
	block, _ := pem.Decode(msg)
	if block == nil || block.Type != "MESSAGE" {
		return nil, failf(eImage, "RSA-OAEP key message: not a PEM MESSAGE block")
	}
	var ct []byte
	if rest, err := asn1.Unmarshal(block.Bytes, &ct); err != nil || len(rest) != 0 {
		return nil, failf(eImage, "RSA-OAEP key message: not one DER OCTET STRING")
	}
	k := priv.Size()
	if len(ct) == 0 || len(ct)%k != 0 {
		return nil, failf(eAuth, "wrong passphrase or key: the key message does not fit a %d-bit RSA key", priv.N.BitLen())
	}
	// Bounded before anything is decrypted: no more blocks than a 512-byte
	// passphrase needs.
	blocks, chunk := len(ct)/k, k-oaepOverhead
	if (blocks-1)*chunk >= luksMaxPassphrase {
		return nil, failf(eImage, "RSA-OAEP key message of %d blocks is longer than any passphrase", blocks)
	}
	room := blocks * chunk
	buf, err := newSecretBuf(room)
	if err != nil {
		return nil, err
	}
	n := 0
	for off := 0; off < len(ct); off += k {
		pt, err := rsa.DecryptOAEP(sha256.New(), nil, priv, ct[off:off+k], nil)
		if err != nil {
			buf.wipe()
			return nil, failf(eAuth, "wrong passphrase or key: the private key does not open the image's key message")
		}
		n += copy(buf.bytes()[n:], pt)
		clear(pt)
	}
	if n == 0 || n > luksMaxPassphrase {
		buf.wipe()
		return nil, failf(eImage, "RSA-OAEP key message holds a %d-byte passphrase", n)
	}
	buf.n = n
	return buf, nil
}

// --- unlocking ---------------------------------------------------------------------

// keyRequest is what the caller offered for encrypted images: the flags, and
// the environment as read once at start (MINIRUN_* never reach the payload).
type keyRequest struct {
	pemPath string
	prompt  bool
	env     []string
	// memory says the memory backend will take the plaintext, within
	// these limits: its memory is then made and filled with the
	// ciphertext while the PEM key is worked out (readCiphertextAhead).
	memory *memoryLimits
}

// memoryLimits is what the memory backend checks before it allocates.
type memoryLimits struct {
	uid    int
	maxMiB int64
	loops  loopLimits
}

// unlockedImage is an encrypted root filesystem whose volume key is known.
type unlockedImage struct {
	vol   *luksVolume
	key   *volumeKey
	name  string
	ahead *ciphertextAhead // the memory backend's memory, read ahead
}

// wipe zeroes the volume key and frees memory read ahead; safe on nil and
// twice.
func (u *unlockedImage) wipe() {
	if u != nil {
		u.key.wipe()
		u.ahead.release()
		u.ahead = nil
	}
}

// inImage puts the image name in front of err, keeping its class.
func inImage(err error, name string) error {
	return failf(classOf(err), "image %s: %w", escapeText(name), err)
}

// unlockRootfs opens the LUKS volume of an encrypted root filesystem and
// unlocks it with the key the caller gave (spec §4.1). It runs before any
// device or lock exists: the prompt waits here and every KDF runs here, under
// the admin's caps (R10). Plain images return nil; a key flag given for one is
// ignored with a warning.
func unlockRootfs(image *os.File, name string, rootfs imageRootfs, req keyRequest, who caller, cfg config, quiet bool) (*unlockedImage, error) {
	src, found := pickKeySource(req.pemPath, req.prompt, req.env)
	if rootfs.kind != rootfsEncrypted {
		if (req.pemPath != "" || req.prompt) && !quiet {
			warnf("image %s is not encrypted; ignoring %s", name, src.origin)
		}
		return nil, nil
	}
	// The header first: a hostile one is refused before anyone is asked
	// for a key, and whether or not a key was given.
	limits := newKDFLimits(cfg.kdfMaxMemoryMiB, cfg.kdfMaxPBKDF2Iterations)
	vol, err := openLUKS(io.NewSectionReader(image, rootfs.offset, rootfs.size), rootfs.size, limits)
	if err != nil {
		return nil, inImage(err, name)
	}
	if !found {
		return nil, failf(eUsage, "image %s is encrypted: use --passphrase or --pem-path (or MINIRUN_ENCRYPTION_PASSPHRASE / MINIRUN_ENCRYPTION_PEM_PATH)", escapeText(name))
	}
	u := &unlockedImage{vol: vol, name: name}
	// RSA-OAEP keeps this core busy for about 2 ms: the other one makes the
	// plaintext memory meanwhile (page allocation is most of its cost).
	if src.pemPath != "" && req.memory != nil {
		u.ahead = readCiphertextAhead(vol, name, *req.memory)
	}
	pass, err := luksPassphraseFrom(src, image, name, rootfs, who)
	if err != nil {
		u.wipe()
		return nil, err
	}
	defer pass.wipe()
	if len(pass.bytes()) == 0 {
		u.wipe()
		return nil, failf(eAuth, "image %s: wrong passphrase or key (the passphrase is empty)", escapeText(name))
	}
	if u.key, err = vol.unlock(pass.bytes()); err != nil {
		u.wipe()
		return nil, inImage(err, name)
	}
	return u, nil
}

// luksPassphraseFrom turns a key source into the LUKS passphrase, in locked memory.
func luksPassphraseFrom(src keySource, image *os.File, name string, rootfs imageRootfs, who caller) (*secretBuf, error) {
	switch {
	case src.prompt:
		return promptPassphrase(name)
	case src.pemPath == "":
		if len(src.passphrase) > luksMaxPassphrase {
			return nil, failf(eUsage, "%s is longer than %d bytes", src.origin, luksMaxPassphrase)
		}
		return secretFrom([]byte(src.passphrase))
	}
	// The key file is the caller's to name, so it is opened as the caller:
	// minirun must not read a root-only key for them (R1).
	var data []byte
	err := asCaller(who, func() (err error) {
		data, err = readKeyFile(src.pemPath)
		return err
	})
	if err != nil {
		return nil, err
	}
	defer clear(data)
	if rootfs.keyMessage == nil {
		return nil, failf(eAuth, "image %s has no RSA-OAEP key message: it was not encrypted with a PEM key (%s)", escapeText(name), src.origin)
	}
	priv, err := parseRSAPrivateKeyPEM(data, src.pemPath)
	if err != nil {
		return nil, err
	}
	defer wipeRSAKey(priv)
	msg, err := readSIFObject(image, rootfs.keyMessage, maxKeyMessage, name)
	if err != nil {
		return nil, err
	}
	pass, err := decryptKeyMessage(msg, priv)
	if err != nil {
		return nil, inImage(err, name)
	}
	return pass, nil
}

// --- backends ------------------------------------------------------------------------

const (
	backendDMCrypt = "dm-crypt"
	backendMemory  = "memory"
)

// chooseEncryptedBackend applies spec §4.2. A caller-writable image under
// user_writable_images = "sealed-copy" always takes the memory backend: its
// copy is root-owned and sealed, so the bytes under the mount cannot change.
// "auto" is dm-crypt when device-mapper answers, else memory; an explicit
// "dm-crypt" without device-mapper is an error, never a silent switch.
func chooseEncryptedBackend(setting string, sealedCopy bool, dmAvailable func() bool) (string, error) {
	if sealedCopy {
		return backendMemory, nil
	}
	switch setting {
	case backendMemory:
		return backendMemory, nil
	case backendDMCrypt:
		if !dmAvailable() {
			return "", failf(eSystem, "device-mapper not available (encrypted_backend = dm-crypt)")
		}
		return backendDMCrypt, nil
	}
	if dmAvailable() {
		return backendDMCrypt, nil
	}
	return backendMemory, nil
}

// attachEncrypted gives an unlocked image's plaintext a read-only block device
// through the chosen backend and wipes the volume key. The device is never
// shared with another launch: every launch proves its own key (spec §5). Its
// loop devices count against the admin's loop limits like any other.
// backend is chooseEncryptedBackend's answer, made once per launch.
func attachEncrypted(image *os.File, rootfs imageRootfs, u *unlockedImage, uid int, backend string, memoryMaxMiB int64, lim loopLimits) (*os.File, error) {
	defer u.wipe()
	if u == nil {
		return nil, failf(eInternal, "encrypted image %s reached the devices without a key", image.Name())
	}
	if backend == backendDMCrypt {
		// dm-crypt reads the ciphertext through a loop device of its own;
		// once the mapping exists, its table holds the loop.
		loop, err := attachLoopWithin(image, rootfs.offset, rootfs.size, uid, lim)
		if err != nil {
			return nil, err
		}
		defer loop.Close()
		return attachDMCrypt(loop, u.vol, u.key, uid)
	}
	return attachMemoryBackend(u, uid, memoryMaxMiB, lim)
}

// attachMemoryBackend decrypts the whole plaintext into a memfd, seals it
// against any change, and backs a read-only autoclear loop device with it
// (spec §4.4). The plaintext never touches a disk-backed file; the loop device
// holds the only reference once this returns, so the mount is the last holder.
func attachMemoryBackend(u *unlockedImage, uid int, maxMiB int64, lim loopLimits) (*os.File, error) {
	n := escapeText(u.name)
	size := u.vol.dataLength
	if err := checkMemoryBackend(u.vol, u.name, memoryLimits{uid: uid, maxMiB: maxMiB, loops: lim}, u.ahead != nil); err != nil {
		return nil, err
	}
	var (
		mem   *os.File
		plain []byte
		err   error
		dst   io.WriterAt
	)
	if ahead := u.ahead; ahead != nil {
		u.ahead = nil
		if err := ahead.wait(); err != nil {
			ahead.release()
			return nil, inImage(err, u.name)
		}
		mem, plain, dst = ahead.mem, ahead.mapped, loadedCiphertext(ahead.mapped)
	} else {
		if mem, plain, err = plaintextMemory(size, n); err != nil {
			return nil, err
		}
		dst = mappedPlain(plain)
	}
	defer mem.Close() // the loop device keeps its own reference
	err = u.vol.decryptTo(dst, u.key, nil)
	unix.Munmap(plain) // before the seals, which a writable mapping would refuse
	if err != nil {
		return nil, inImage(err, u.name)
	}
	u.key.wipe() // nothing needs it any more
	if err := checkSquashfsSuper(mem, 0, size, u.name); err != nil {
		return nil, failf(eImage, "image %s: the decrypted data is not a valid squashfs: %w", n, err)
	}
	if _, err := unix.FcntlInt(mem.Fd(), unix.F_ADD_SEALS, allSeals); err != nil {
		return nil, failf(eSystem, "seal the plaintext of %s: %w", n, err)
	}
	if seals, err := unix.FcntlInt(mem.Fd(), unix.F_GET_SEALS, 0); err != nil || seals != allSeals {
		return nil, failf(eInternal, "plaintext of %s: seals read back as %#x, want %#x (%v)", n, seals, allSeals, err)
	}
	// 4096-byte blocks like the LUKS sectors (spec §4.4), unless the plaintext
	// is not a whole number of them.
	blockSize := uint32(4096)
	if size%4096 != 0 {
		blockSize = 0
	}
	return attachLoopBlocksWithin(mem, 0, size, uid, blockSize, lim)
}

// checkMemoryBackend refuses, before anything is allocated, a plaintext
// larger than the admin's limit or the memory available, a swap area that
// could write it to disk, and a full loop quota. With the memory already
// allocated (read ahead), MemAvailable no longer counts it, and only the
// swap and the quota are checked again.
func checkMemoryBackend(vol *luksVolume, name string, l memoryLimits, allocated bool) error {
	n := escapeText(name)
	size := vol.dataLength
	if size <= 0 {
		return failf(eImage, "image %s: the encrypted partition holds no data", n)
	}
	if !allocated {
		availKiB, _ := luksMeminfoKiB("MemAvailable")
		if l.maxMiB < 0 || size > l.maxMiB<<20 || (availKiB != 0 && uint64(size) > availKiB*1024) {
			return failf(eResource, "image %s: encrypted image needs %d MiB of RAM for the memory backend (limit %d MiB, memory_backend_max_mib; %d MiB available); use a kernel with dm-crypt or raise the limit",
				n, (size+1<<20-1)>>20, l.maxMiB, availKiB>>10)
		}
	}
	if err := checkSwapForPlaintext(); err != nil {
		return err
	}
	return l.loops.check(l.uid, 0)
}

// plaintextMemory makes the memfd for size bytes of plaintext and a shared,
// writable mapping of it, where the data is decrypted in place.
func plaintextMemory(size int64, n string) (*os.File, []byte, error) {
	fd, err := unix.MemfdCreate(memfdPlainName, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, nil, failf(eSystem, "create memory for the plaintext of %s: %w", n, err)
	}
	mem := os.NewFile(uintptr(fd), "/memfd:"+memfdPlainName)
	if err := unix.Ftruncate(fd, size); err != nil {
		mem.Close()
		return nil, nil, failf(eResource, "size memory for the plaintext of %s (%d MiB): %w", n, size>>20, err)
	}
	plain, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		mem.Close()
		return nil, nil, failf(eResource, "map memory for the plaintext of %s (%d MiB): %w", n, size>>20, err)
	}
	return mem, plain, nil
}

// ciphertextAhead is the memory backend's memfd, filled with the encrypted
// data by a goroutine while the key is still being worked out.
type ciphertextAhead struct {
	mem    *os.File
	mapped []byte
	read   chan error
	err    error
	waited bool
}

// readCiphertextAhead starts reading vol's encrypted data into the memory
// backend's memfd, if the memory backend's checks pass (else
// attachMemoryBackend reports them in their turn).
func readCiphertextAhead(vol *luksVolume, name string, l memoryLimits) *ciphertextAhead {
	if checkMemoryBackend(vol, name, l, false) != nil {
		return nil
	}
	mem, mapped, err := plaintextMemory(vol.dataLength, escapeText(name))
	if err != nil {
		return nil
	}
	a := &ciphertextAhead{mem: mem, mapped: mapped, read: make(chan error, 1)}
	go func() { a.read <- luksReadAt(vol.r, mapped, vol.dataOffset, "encrypted data") }()
	return a
}

// wait returns the read's result once it is done.
func (a *ciphertextAhead) wait() error {
	if !a.waited {
		a.err, a.waited = <-a.read, true
	}
	return a.err
}

// release frees the memory, once the read no longer writes to it; safe on nil.
func (a *ciphertextAhead) release() {
	if a != nil {
		a.wait()
		unix.Munmap(a.mapped)
		a.mem.Close()
	}
}

// checkSwapForPlaintext refuses the memory backend while a swap area could
// write plaintext pages to disk unencrypted: memfd pages are swappable, and an
// mlock would not survive the payload's execve. zram and dm-crypt swap are fine.
func checkSwapForPlaintext() error {
	f, err := openFile("/proc/swaps", os.O_RDONLY, 0)
	if err != nil {
		return failf(eSystem, "read /proc/swaps: %w", err)
	}
	defer f.Close()
	text, err := io.ReadAll(io.LimitReader(f, 256<<10))
	if err != nil {
		return failf(eSystem, "read /proc/swaps: %w", err)
	}
	if bad := unsafeSwaps(string(text), safeSwapDevice); len(bad) > 0 {
		return failf(ePolicy, "encrypted images are decrypted into memory here (no dm-crypt), which is refused while unencrypted swap is active (%s): the plaintext could be swapped to disk; use zram or dm-crypt swap, or a kernel with dm-crypt",
			strings.Join(bad, ", "))
	}
	return nil
}

// unsafeSwaps lists the swap areas of /proc/swaps text that safe does not accept.
func unsafeSwaps(text string, safe func(path string) bool) []string {
	var bad []string
	for i, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) == 0 {
			continue // the header
		}
		name := unescapeOctal(f[0])
		if len(f) < 2 || f[1] != "partition" || !safe(name) {
			bad = append(bad, escapeText(name))
		}
	}
	return bad
}

// unescapeOctal undoes the \NNN escapes the kernel puts in /proc paths.
func unescapeOctal(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// safeSwapDevice is true for a zram device or a dm-crypt mapping, judged by the
// device number through sysfs, not by the name.
func safeSwapDevice(path string) bool {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return false
	}
	sys := "/sys/dev/block/" + strconv.FormatUint(uint64(unix.Major(st.Rdev)), 10) + ":" + strconv.FormatUint(uint64(unix.Minor(st.Rdev)), 10)
	if uuid, err := readProcFile(sys+"/dm/uuid", 4096); err == nil {
		return bytes.HasPrefix(uuid, []byte("CRYPT-"))
	}
	target, err := os.Readlink(sys)
	if err != nil {
		return false
	}
	base := target[strings.LastIndexByte(target, '/')+1:]
	return strings.HasPrefix(base, "zram")
}

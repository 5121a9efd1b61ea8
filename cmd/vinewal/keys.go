package main

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/vineroute/vinequeue/wal"
)

// keyFlags are the key options every command takes, for a directory
// written with WALConfig.EncryptionKey:
//
//	-key-file FILE          the key the Queue encrypts with (EncryptionKey)
//	-decrypt-key-file FILE  an older key (DecryptionKeys); repeatable, or
//	                        several files separated by commas
//
// A key file holds the key as exactly 32 raw bytes, or as 64 hex digits
// (surrounding white space, such as a trailing newline, is ignored).
// Commands that only read treat every key alike; repair and dlq purge
// open the directory as a Queue would, and dlq requeue writes records
// into it, sealed under -key-file.
type keyFlags struct {
	keyFile     string
	decryptKeys []string
}

func addKeyFlags(fs *flag.FlagSet) *keyFlags {
	k := &keyFlags{}
	fs.StringVar(&k.keyFile, "key-file", "", "file holding the encryption key (32 raw bytes or 64 hex digits)")
	fs.Func("decrypt-key-file", "file holding an older key (repeatable, or a comma-separated list)", func(s string) error {
		for _, f := range strings.Split(s, ",") {
			if f = strings.TrimSpace(f); f != "" {
				k.decryptKeys = append(k.decryptKeys, f)
			}
		}
		return nil
	})
	return k
}

// given reports whether any key file was named.
func (k *keyFlags) given() bool { return k.keyFile != "" || len(k.decryptKeys) > 0 }

// load reads the key files: the encryption key (nil if none) and the older
// keys.
func (k *keyFlags) load() ([]byte, [][]byte, error) {
	var enc []byte
	if k.keyFile != "" {
		var err error
		if enc, err = readKeyFile(k.keyFile); err != nil {
			return nil, nil, err
		}
	}
	var dec [][]byte
	for _, f := range k.decryptKeys {
		key, err := readKeyFile(f)
		if err != nil {
			return nil, nil, err
		}
		dec = append(dec, key)
	}
	return enc, dec, nil
}

// all reads every key file, for the commands that only read.
func (k *keyFlags) all() ([][]byte, error) {
	enc, dec, err := k.load()
	if err != nil {
		return nil, err
	}
	if enc != nil {
		dec = append([][]byte{enc}, dec...)
	}
	return dec, nil
}

// options returns wal.Options carrying the keys.
func (k *keyFlags) options(o wal.Options) (wal.Options, error) {
	enc, dec, err := k.load()
	if err != nil {
		return o, err
	}
	o.EncryptionKey, o.DecryptionKeys = enc, dec
	return o, nil
}

// readKeyFile reads a key: 32 raw bytes, or 64 hex digits.
func readKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	if len(b) == wal.KeySize {
		return b, nil
	}
	if t := bytes.TrimSpace(b); len(t) == 2*wal.KeySize {
		key := make([]byte, wal.KeySize)
		if _, err := hex.Decode(key, t); err == nil {
			return key, nil
		}
	}
	return nil, fmt.Errorf("key file %s: want %d raw bytes or %d hex digits, found %d bytes", path, wal.KeySize, 2*wal.KeySize, len(b))
}

// keyHint adds what to do to a key error.
func keyHint(err error) error {
	if errors.Is(err, wal.ErrKey) {
		return fmt.Errorf("%w (give the directory's keys with -key-file and -decrypt-key-file; `vinewal inspect` lists the key ids it needs)", err)
	}
	return err
}

package main

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vineroute/vinequeue/wal"
)

func key(n byte) []byte { return bytes.Repeat([]byte{n, 0x33, n ^ 0xff, 7}, wal.KeySize/4) }

// makeSealedWAL writes records and two dead letters under k (as a Queue
// with WALConfig.EncryptionKey would) and returns the directory.
func makeSealedWAL(t *testing.T, k []byte) string {
	t.Helper()
	dir := t.TempDir()
	l, err := wal.Open(dir, wal.Options{SegmentSize: 4096, NoSync: true, EncryptionKey: k})
	require.NoError(t, err)
	for i := 0; i < 60; i++ {
		var p []byte
		for j := 0; j < 3; j++ {
			p = wal.AppendFrame(p, fmt.Appendf(nil, `{"secret":"s%d-%d"}`, i, j))
		}
		_, err := l.Append(p)
		require.NoError(t, err)
	}
	for i := 1; i <= 2; i++ {
		p := wal.AppendFrame(nil, fmt.Appendf(nil, "dead-secret-%d", i))
		_, err := l.DeadLetter(p, wal.DeadMeta{Time: time.Unix(1700000000, 0), Reason: "broker down"})
		require.NoError(t, err)
	}
	require.NoError(t, l.Close())
	return dir
}

// keyFiles writes k as a raw key file and as a hex one (with a newline).
func keyFiles(t *testing.T, k []byte) (raw, hexFile string) {
	t.Helper()
	d := t.TempDir()
	raw, hexFile = filepath.Join(d, "raw.key"), filepath.Join(d, "hex.key")
	require.NoError(t, os.WriteFile(raw, k, 0o600))
	require.NoError(t, os.WriteFile(hexFile, []byte(hex.EncodeToString(k)+"\n"), 0o600))
	return raw, hexFile
}

func TestKeyFilesOnAnEncryptedDirectory(t *testing.T) {
	k1, k2 := key(1), key(2)
	dir := makeSealedWAL(t, k1)
	raw1, hex1 := keyFiles(t, k1)
	raw2, _ := keyFiles(t, k2)

	// Checksums need no key: inspect and verify work without one and say
	// which key the directory needs.
	code, out, _ := runT(t, "inspect", dir)
	require.Equal(t, 0, code, out)
	require.Contains(t, out, wal.KeyID(k1))
	require.Contains(t, out, "keys: none given")
	code, out, _ = runT(t, "verify", dir)
	require.Equal(t, 0, code, out)
	// With the right key (raw or hex, as -key-file or -decrypt-key-file),
	// verify also opens every sealed record.
	for _, args := range [][]string{{"-key-file", raw1}, {"-key-file", hex1}, {"-decrypt-key-file", raw2 + "," + hex1}, {"-decrypt-key-file", raw2, "-decrypt-key-file", raw1}} {
		code, out, errOut := runT(t, append(append([]string{"verify"}, args...), dir)...)
		require.Equal(t, 0, code, "%v: %s %s", args, out, errOut)
		require.Contains(t, out, "the keys given open every file")
	}
	// The wrong key: verify names the missing key id and fails.
	code, out, _ = runT(t, "verify", "-key-file", raw2, dir)
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "MISSING key ids "+wal.KeyID(k1))

	// Reading items needs the key.
	code, out, errOut := runT(t, "dump", "-items", dir)
	require.Equal(t, 2, code, out)
	require.Contains(t, errOut, "-key-file")
	code, out, errOut = runT(t, "dump", "-items", "-key-file", hex1, dir)
	require.Equal(t, 0, code, errOut)
	require.Equal(t, 180, strings.Count(out, "\n"))
	require.Contains(t, out, `{"secret":"s59-2"}`)
	code, _, errOut = runT(t, "dlq", "list", dir)
	require.Equal(t, 2, code)
	require.Contains(t, errOut, wal.KeyID(k1))
	code, out, _ = runT(t, "dlq", "list", "-key-file", raw1, dir)
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "2 dead letters")
	code, out, _ = runT(t, "dlq", "dump", "-key-file", raw1, dir, "2")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "dead-secret-2")

	// Writing commands: requeue refuses to run with only older keys (it
	// would write in the clear); repair and purge need the keys.
	code, _, errOut = runT(t, "dlq", "requeue", "-decrypt-key-file", raw1, dir)
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "-key-file")
	code, _, errOut = runT(t, "repair", dir)
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "encryption key")
	code, out, errOut = runT(t, "repair", "-key-file", raw1, dir)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "nothing to repair")
	code, out, errOut = runT(t, "dlq", "requeue", "-key-file", raw2, "-decrypt-key-file", raw1, dir, "1")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "requeued 1")
	code, out, errOut = runT(t, "dlq", "purge", "-key-file", raw2, "-decrypt-key-file", raw1, dir, "2")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "purged 1")
	// The requeued items went into a segment sealed under the new key.
	code, out, _ = runT(t, "inspect", "-key-file", raw2, "-decrypt-key-file", raw1, dir)
	require.Equal(t, 0, code, out)
	require.Contains(t, out, wal.KeyID(k2))
	code, out, _ = runT(t, "dump", "-items", "-key-file", raw2, "-decrypt-key-file", raw1, dir)
	require.Equal(t, 0, code)
	require.Contains(t, out, "dead-secret-1")
}

func TestBadKeyFiles(t *testing.T) {
	dir := makeSealedWAL(t, key(1))
	d := t.TempDir()
	for name, content := range map[string][]byte{
		"short":   key(1)[:31],
		"long":    append(key(1), 0),
		"badhex":  []byte(strings.Repeat("zz", 32)),
		"shorthx": []byte(hex.EncodeToString(key(1)[:31])),
	} {
		p := filepath.Join(d, name)
		require.NoError(t, os.WriteFile(p, content, 0o600))
		code, _, errOut := runT(t, "verify", "-key-file", p, dir)
		require.Equal(t, 2, code, name)
		require.Contains(t, errOut, "key file", name)
	}
	code, _, errOut := runT(t, "verify", "-key-file", filepath.Join(d, "missing"), dir)
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "key file")
}

// A sealed record altered with its CRC made to match passes the checksum
// scan; verify with the key opens it and reports it.
func TestVerifyWithKeyFindsAnAlteredRecord(t *testing.T) {
	k := key(3)
	dir := makeSealedWAL(t, k)
	raw, _ := keyFiles(t, k)
	first := filepath.Join(dir, fmt.Sprintf("%020d.wal", 1))
	b, err := os.ReadFile(first)
	require.NoError(t, err)
	off := 32 // the first record
	n := int(binary.LittleEndian.Uint32(b[off+16:]))
	b[off+24+20] ^= 1
	end := off + 24 + n
	binary.LittleEndian.PutUint32(b[end:], crc32.Checksum(b[off:end], crc32.MakeTable(crc32.Castagnoli)))
	require.NoError(t, os.WriteFile(first, b, 0o600))
	code, out, _ := runT(t, "verify", dir)
	require.Equal(t, 0, code, "without the key only checksums are checked: %s", out)
	code, out, _ = runT(t, "verify", "-key-file", raw, dir)
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "does not authenticate")
}

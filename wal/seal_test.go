package wal

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// testKey returns a fixed 32-byte key, different for each n.
func testKey(n byte) []byte {
	return bytes.Repeat([]byte{n, 0x5a ^ n, 0xc3, n + 1}, KeySize/4)
}

// secretItem is an item whose text must never be found on disk in the
// clear: a marker plus a number, in a JSON event that compresses well (so
// a compressed copy would still hold the marker's bytes literally).
func secretItem(i int) []byte {
	return fmt.Appendf(nil, `{"user":"SECRET-%05d","card":"4111-1111-1111-%04d","note":"%s"}`, i, i%10000, strings.Repeat("confidential ", 3))
}

// filesUnder returns every regular file under dir (recursively), by path.
func filesUnder(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	require.NoError(t, filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(path)
		out[path] = b
		return err
	}))
	return out
}

// writeSecrets fills a log with every kind of file that holds item
// bytes: records by Append, AppendItems and Write over several segments,
// a dead letter (its reason names an item too), and a damaged segment that
// recovery moves aside and rewrites. It returns the items not
// acknowledged, which must come back.
func writeSecrets(t *testing.T, dir string, opts Options) (pending map[string]bool) {
	t.Helper()
	l := openT(t, dir, opts)
	pending = map[string]bool{}
	n := 0
	for r := 0; r < 40; r++ {
		var batch [][]byte
		for range 5 {
			batch = append(batch, secretItem(n))
			pending[string(secretItem(n))] = true
			n++
		}
		_, err := l.AppendItems(batch)
		require.NoError(t, err)
		var framed []byte
		framed = AppendFrame(framed, secretItem(n))
		pending[string(secretItem(n))] = true
		n++
		_, err = l.Write(framed)
		require.NoError(t, err)
	}
	dead, _ := deadBatch("SECRET-dead", 3)
	_, err := l.DeadLetter(dead, DeadMeta{Reason: "Send: bad record SECRET-reason"})
	require.NoError(t, err)
	st := l.Stats()
	require.Greater(t, st.Segments, 1, "the test needs several segments")
	require.NoError(t, l.Close())
	return pending
}

// TestEncryptedDirectoryHoldsNoPlaintext writes items with recognisable
// text, under each compression, and checks that no file in the directory
// (segments, dead letters, ack logs, moved-aside copies of a damaged
// segment, its repaired replacement) holds any of it, and that the items
// come back with the key. The same run without a key finds the text,
// so the check can fail.
func TestEncryptedDirectoryHoldsNoPlaintext(t *testing.T) {
	for _, c := range []Compression{Snappy, LZ4, NoCompression} {
		for _, encrypted := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/encrypted=%v", c, encrypted), func(t *testing.T) {
				dir := t.TempDir()
				opts := Options{SegmentSize: 8 << 10, Compression: c, NoSync: true}
				if encrypted {
					opts.EncryptionKey = testKey(1)
				}
				pending := writeSecrets(t, dir, opts)
				// Damage the last segment's last record: recovery moves the
				// file aside as .corrupt and writes its intact prefix anew.
				segs, err := listSegments(dir)
				require.NoError(t, err)
				last := filepath.Join(dir, segs[len(segs)-1].name)
				b, err := os.ReadFile(last)
				require.NoError(t, err)
				bounds := recordBoundaries(b)
				b[bounds[len(bounds)-2]+30] ^= 0x40
				require.NoError(t, os.WriteFile(last, b, 0o600))

				l := openT(t, dir, opts)
				require.EqualValues(t, 1, l.Stats().Corrupt)
				back := 0
				require.NoError(t, l.Replay(func(id uint64, p []byte, _ []ItemRange) error {
					return ForEachItem(p, func(item []byte) error {
						require.True(t, pending[string(item)], "replayed %q", item)
						back++
						return nil
					})
				}))
				require.Equal(t, len(pending)-1, back) // all but the damaged record's one item
				dls, err := l.DeadLetters()
				require.NoError(t, err)
				require.Len(t, dls, 1)
				require.Contains(t, dls[0].Reason, "SECRET-reason")
				require.NoError(t, l.Close())

				files := filesUnder(t, dir)
				var names []string
				for p := range files {
					names = append(names, strings.TrimPrefix(p, dir+"/"))
				}
				slices.Sort(names)
				require.Contains(t, names, "dlq/"+deadFileName(1))
				require.Contains(t, names, filepath.Base(last)+corruptSuffix)
				found := 0
				for path, data := range files {
					for _, marker := range []string{"SECRET", "4111-1111", "confidential"} {
						if bytes.Contains(data, []byte(marker)) {
							found++
							if encrypted {
								t.Errorf("%s holds %q in the clear", path, marker)
							}
						}
					}
				}
				if !encrypted {
					require.NotZero(t, found, "without a key the items must be visible: the check would find a leak")
				}
				t.Logf("files: %v", names)
			})
		}
	}
}

// TestEncryptionWrongKeyIsAConfigError checks that a directory written
// under one key, opened with none, another, or a short one, is refused
// with ErrKey (and ErrInvalidOptions) before anything changes: not a byte
// of it differs afterwards, and the right key then replays everything and
// counts no loss.
func TestEncryptionWrongKeyIsAConfigError(t *testing.T) {
	dir := t.TempDir()
	k1 := testKey(1)
	opts := Options{SegmentSize: 8 << 10, NoSync: true, EncryptionKey: k1}
	pending := writeSecrets(t, dir, opts)
	before := filesUnder(t, dir)

	for name, o := range map[string]Options{
		"no key":            {SegmentSize: 8 << 10},
		"another key":       {SegmentSize: 8 << 10, EncryptionKey: testKey(2)},
		"another old key":   {SegmentSize: 8 << 10, DecryptionKeys: [][]byte{testKey(3)}},
		"short key":         {SegmentSize: 8 << 10, EncryptionKey: k1[:16]},
		"empty key":         {SegmentSize: 8 << 10, EncryptionKey: []byte{}},
		"long old key":      {SegmentSize: 8 << 10, EncryptionKey: k1, DecryptionKeys: [][]byte{append(bytes.Clone(k1), 0)}},
		"right key, short2": {SegmentSize: 8 << 10, EncryptionKey: k1, DecryptionKeys: [][]byte{k1[:31]}},
	} {
		l, err := Open(dir, o)
		require.ErrorIs(t, err, ErrKey, name)
		require.ErrorIs(t, err, ErrInvalidOptions, name)
		require.Nil(t, l, name)
		t.Logf("%s: %v", name, err)
	}
	// The keys lacking are reported by Inspect, without changing anything.
	r, err := Inspect(dir, testKey(2))
	require.NoError(t, err)
	require.Equal(t, []string{KeyID(k1)}, r.KeyIDs)
	require.Equal(t, []string{KeyID(k1)}, r.MissingKeys)
	r, err = Inspect(dir, k1)
	require.NoError(t, err)
	require.Empty(t, r.MissingKeys)
	for _, s := range r.Segments {
		require.Equal(t, KeyID(k1), s.KeyID, s.Name)
	}
	_, err = ListDeadLetters(dir)
	require.ErrorIs(t, err, ErrKey)
	_, _, err = ReadDeadLetter(dir, 1, testKey(2))
	require.ErrorIs(t, err, ErrKey)
	_, err = ReadSegment(filepath.Join(dir, segmentName(1)), func(Record) error { return nil })
	require.ErrorIs(t, err, ErrKey)

	after := filesUnder(t, dir)
	delete(before, filepath.Join(dir, lockFileName))
	delete(after, filepath.Join(dir, lockFileName))
	require.Equal(t, before, after, "a refused Open changed the directory")

	l := openT(t, dir, opts)
	back := 0
	require.NoError(t, l.Replay(func(id uint64, p []byte, _ []ItemRange) error {
		return ForEachItem(p, func(item []byte) error {
			require.True(t, pending[string(item)])
			back++
			return nil
		})
	}))
	require.Equal(t, len(pending), back)
	require.Zero(t, l.Stats().Corrupt)
	require.NoError(t, l.Close())
	dls, err := ListDeadLetters(dir, k1)
	require.NoError(t, err)
	require.Len(t, dls, 1)
}

// segmentKeyIDs returns the key id each segment of dir is sealed under
// ("" for none), by file name.
func segmentKeyIDs(t *testing.T, dir string) map[string]string {
	t.Helper()
	r, err := Inspect(dir)
	require.NoError(t, err)
	out := map[string]string{}
	for _, s := range r.Segments {
		out[s.Name] = s.KeyID
	}
	return out
}

// TestEncryptionKeyRotation writes under K1, reopens with K2 and
// DecryptionKeys{K1} — everything written under K1 replays, and new
// segments and dead letters are sealed under K2 — and, once the K1
// segments are acknowledged and gone (and the K1 dead letter purged), K2
// alone opens the directory.
func TestEncryptionKeyRotation(t *testing.T) {
	dir := t.TempDir()
	k1, k2 := testKey(1), testKey(2)
	o1 := Options{SegmentSize: 8 << 10, NoSync: true, EncryptionKey: k1}
	o2 := Options{SegmentSize: 8 << 10, NoSync: true, EncryptionKey: k2, DecryptionKeys: [][]byte{k1}}
	pending := writeSecrets(t, dir, o1)
	old := segmentKeyIDs(t, dir)
	for name, id := range old {
		require.Equal(t, KeyID(k1), id, name)
	}

	l := openT(t, dir, o2)
	var oldIDs []uint64
	back := 0
	require.NoError(t, l.Replay(func(id uint64, p []byte, _ []ItemRange) error {
		oldIDs = append(oldIDs, id)
		return ForEachItem(p, func(item []byte) error {
			require.True(t, pending[string(item)])
			back++
			return nil
		})
	}))
	require.Equal(t, len(pending), back)
	newItems := map[string]bool{}
	for i := 1000; i < 1100; i++ {
		_, err := l.AppendItem(secretItem(i))
		require.NoError(t, err)
		newItems[string(secretItem(i))] = true
	}
	p, _ := deadBatch("SECRET-new-dead", 2)
	_, err := l.DeadLetter(p, DeadMeta{Reason: "new"})
	require.NoError(t, err)
	require.NoError(t, l.Close())
	for name, id := range segmentKeyIDs(t, dir) {
		if _, ok := old[name]; ok {
			require.Equal(t, KeyID(k1), id, name)
		} else {
			require.Equal(t, KeyID(k2), id, "new segment %s", name)
		}
	}
	r, err := Inspect(dir, k2)
	require.NoError(t, err)
	require.Equal(t, []string{KeyID(k1)}, r.MissingKeys, "the K1 files still need K1")

	// Acknowledge everything written under K1 and purge its dead letter:
	// then K2 alone opens the directory, and the new items replay.
	l = openT(t, dir, o2)
	for _, id := range oldIDs {
		require.NoError(t, l.Ack(id))
	}
	_, err = l.PurgeDeadLetters(1)
	require.NoError(t, err)
	require.NoError(t, l.Close())
	r, err = Inspect(dir, k2)
	require.NoError(t, err)
	require.Empty(t, r.MissingKeys)
	require.Equal(t, []string{KeyID(k2)}, r.KeyIDs)

	l = openT(t, dir, Options{SegmentSize: 8 << 10, NoSync: true, EncryptionKey: k2})
	back = 0
	require.NoError(t, l.Replay(func(id uint64, p []byte, _ []ItemRange) error {
		return ForEachItem(p, func(item []byte) error {
			require.True(t, newItems[string(item)], "replayed %q", item)
			back++
			return nil
		})
	}))
	require.Equal(t, len(newItems), back)
	dls, err := l.DeadLetters()
	require.NoError(t, err)
	require.Len(t, dls, 1)
	require.Equal(t, "new", dls[0].Reason)
	require.Zero(t, l.Stats().Corrupt)
	require.NoError(t, l.Close())
}

// TestEncryptionAddedToAPlaintextLog: records written in the clear still
// replay once a key is set; new ones are sealed; ReadRange reads both.
func TestEncryptionAddedToAPlaintextLog(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{SegmentSize: 8 << 10, NoSync: true})
	var ids []uint64
	for i := range 50 {
		id, err := l.Append(AppendFrame(nil, secretItem(i)))
		require.NoError(t, err)
		ids = append(ids, id)
	}
	require.NoError(t, l.Close())
	opts := Options{SegmentSize: 8 << 10, NoSync: true, EncryptionKey: testKey(7)}
	l = openT(t, dir, opts)
	got := replayAll(t, l)
	require.Len(t, got, 50)
	for i, id := range ids {
		require.Equal(t, AppendFrame(nil, secretItem(i)), got[id])
	}
	for i := 50; i < 100; i++ {
		id, err := l.Append(AppendFrame(nil, secretItem(i)))
		require.NoError(t, err)
		ids = append(ids, id)
	}
	n := 0
	require.NoError(t, l.ReadRange(ids[0], ids[len(ids)-1], func(id uint64, p []byte) error {
		require.Equal(t, AppendFrame(nil, secretItem(n)), p)
		n++
		return nil
	}))
	require.Equal(t, 100, n)
	require.NoError(t, l.Close())
	keyed := 0
	for _, id := range segmentKeyIDs(t, dir) {
		if id != "" {
			require.Equal(t, KeyID(testKey(7)), id)
			keyed++
		}
	}
	require.NotZero(t, keyed)
}

// TestEncryptedRecordDamage: a flipped bit in a sealed record's ciphertext
// is damage like any other (found by its CRC, without the key), counted
// exactly; a record altered with its CRC made to match — ciphertext, or a
// header field the tag authenticates — does not authenticate, and Replay
// counts it lost and skips it while the others replay.
func TestEncryptedRecordDamage(t *testing.T) {
	key := testKey(4)
	opts := Options{SegmentSize: 64 << 10, NoSync: true, EncryptionKey: key}
	build := func(t *testing.T) (string, []byte, []int64) {
		dir := t.TempDir()
		l := openT(t, dir, opts)
		for i := range 10 {
			_, err := l.Append(AppendFrame(nil, secretItem(i)))
			require.NoError(t, err)
		}
		require.NoError(t, l.Close())
		b, err := os.ReadFile(filepath.Join(dir, segmentName(1)))
		require.NoError(t, err)
		return dir, b, recordBoundaries(b)
	}
	reopen := func(t *testing.T, dir string, b []byte) (uint64, []uint64) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, segmentName(1)), b, 0o600))
		l := openT(t, dir, opts)
		got := replayAll(t, l)
		st := l.Stats()
		require.NoError(t, l.Close())
		var ids []uint64
		for id := range got {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		return st.Corrupt, ids
	}
	t.Run("bit flip in the ciphertext", func(t *testing.T) {
		dir, b, bounds := build(t)
		b[bounds[6]+recordHeaderSize+20] ^= 1 // record 7's ciphertext
		require.NoError(t, os.WriteFile(filepath.Join(dir, segmentName(1)), b, 0o600))
		r, err := Inspect(dir) // no key: checksums cover the ciphertext
		require.NoError(t, err)
		corrupt, ids := reopen(t, dir, b)
		require.Equal(t, []uint64{1, 2, 3, 4, 5, 6, 8, 9, 10}, ids)
		require.EqualValues(t, 1, corrupt) // 7 alone: the scan goes on at 8
		require.Equal(t, corrupt, r.LostRecords, "Inspect predicts the loss")
	})
	fixCRC := func(b []byte, off int64) {
		n := int64(binary.LittleEndian.Uint32(b[off+16:]))
		end := off + recordHeaderSize + n
		binary.LittleEndian.PutUint32(b[end:], crc32.Checksum(b[off:end], castagnoli))
	}
	t.Run("ciphertext altered, CRC fixed", func(t *testing.T) {
		dir, b, bounds := build(t)
		b[bounds[2]+recordHeaderSize+20] ^= 1 // record 3
		fixCRC(b, bounds[2])
		corrupt, ids := reopen(t, dir, b)
		require.EqualValues(t, 1, corrupt)
		require.Equal(t, []uint64{1, 2, 4, 5, 6, 7, 8, 9, 10}, ids)
	})
	t.Run("header altered, CRC fixed", func(t *testing.T) {
		dir, b, bounds := build(t)
		b[bounds[4]+8] ^= 1 // record 5's timestamp
		fixCRC(b, bounds[4])
		corrupt, ids := reopen(t, dir, b)
		require.EqualValues(t, 1, corrupt)
		require.Equal(t, []uint64{1, 2, 3, 4, 6, 7, 8, 9, 10}, ids)
	})
}

// TestLargestSealedRecordReplays: MaxRecord bounds a payload before it is
// sealed, and a seal adds sealOverhead bytes; a record of MaxRecord bytes
// above the 64 MiB floor of the read limit was written (Append returned
// nil) and then refused at the next Open as over the limit: lost, counted
// in Corrupt.
func TestLargestSealedRecordReplays(t *testing.T) {
	dir := fastTempDir(t)
	opts := Options{SegmentSize: 66 << 20, MaxRecord: 64<<20 + 64, NoSync: true,
		Compression: NoCompression, EncryptionKey: testKey(3), noSpare: true}
	l := openT(t, dir, opts)
	p := make([]byte, opts.MaxRecord)
	for i := range p {
		p[i] = byte(i)
	}
	id, err := l.Append(p)
	require.NoError(t, err)
	require.NoError(t, l.Close())
	opts.EncryptionKey, opts.DecryptionKeys = testKey(4), [][]byte{testKey(3)} // rotated: read under an old key
	l = openT(t, dir, opts)
	defer l.Close()
	require.Zero(t, l.Stats().Corrupt)
	got := replayAll(t, l)
	require.Len(t, got, 1)
	require.True(t, bytes.Equal(p, got[id]))
}

package wal

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// deadBatch frames n items "<tag>/<i>" (padded, so they compress).
func deadBatch(tag string, n int) ([]byte, []string) {
	var p []byte
	var items []string
	for i := range n {
		it := fmt.Sprintf("%s/%d %s", tag, i, strings.Repeat("x", 40))
		items = append(items, it)
		p = AppendFrame(p, []byte(it))
	}
	return p, items
}

func splitItems(t testing.TB, p []byte) []string {
	t.Helper()
	var out []string
	require.NoError(t, ForEachItem(p, func(it []byte) error {
		out = append(out, string(it))
		return nil
	}))
	return out
}

func deadIDs(dls []DeadLetter) []uint64 {
	var ids []uint64
	for _, d := range dls {
		ids = append(ids, d.ID)
	}
	return ids
}

func TestDeadLetterRoundTrip(t *testing.T) {
	for _, c := range []Compression{Snappy, LZ4, NoCompression} {
		t.Run(c.String(), func(t *testing.T) {
			dir := t.TempDir()
			l := openT(t, dir, Options{SegmentSize: 64 << 10, Compression: c})
			when := time.Unix(1700000000, 123456789)
			var want [][]string
			for i := range 3 {
				p, items := deadBatch(fmt.Sprint(i), 5+i)
				id, err := l.DeadLetter(p, DeadMeta{Time: when, Reason: fmt.Sprintf("boom %d", i), Records: []uint64{uint64(10 + i), 99}, Attempts: 4})
				require.NoError(t, err)
				require.Equal(t, uint64(i+1), id)
				want = append(want, items)
			}
			check := func(dls []DeadLetter) {
				t.Helper()
				require.Len(t, dls, 3)
				for i, d := range dls {
					assert.Equal(t, uint64(i+1), d.ID)
					assert.True(t, when.Equal(d.Time), d.Time)
					assert.Equal(t, fmt.Sprintf("boom %d", i), d.Reason)
					assert.Equal(t, []uint64{uint64(10 + i), 99}, d.Records)
					assert.Equal(t, 4, d.Attempts)
					assert.Equal(t, 5+i, d.Items)
					assert.Nil(t, d.Damage)
					assert.Positive(t, d.FileSize)
				}
			}
			dls, err := l.DeadLetters()
			require.NoError(t, err)
			check(dls)
			st := l.Stats()
			assert.Equal(t, 3, st.DeadLetters)
			assert.Equal(t, dls[0].FileSize+dls[1].FileSize+dls[2].FileSize, st.DeadBytes)
			for i := range 3 {
				d, p, err := l.ReadDeadLetter(uint64(i + 1))
				require.NoError(t, err)
				assert.Equal(t, want[i], splitItems(t, p))
				assert.Equal(t, len(p), d.Bytes)
			}
			_, _, err = l.ReadDeadLetter(4)
			require.ErrorIs(t, err, ErrNotFound)

			// Files 0600 in a 0700 directory.
			fi, err := os.Stat(filepath.Join(dir, deadDirName))
			require.NoError(t, err)
			assert.Equal(t, os.FileMode(0o700), fi.Mode().Perm())
			ents, err := os.ReadDir(filepath.Join(dir, deadDirName))
			require.NoError(t, err)
			for _, e := range ents {
				fi, err := e.Info()
				require.NoError(t, err)
				assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), e.Name())
			}

			// Offline, while open and after Close.
			dls, err = ListDeadLetters(dir)
			require.NoError(t, err)
			check(dls)
			require.NoError(t, l.Close())
			_, err = l.DeadLetter(nil, DeadMeta{})
			require.ErrorIs(t, err, ErrClosed)
			dls, err = ListDeadLetters(dir)
			require.NoError(t, err)
			check(dls)
			_, p, err := ReadDeadLetter(dir, 2)
			require.NoError(t, err)
			assert.Equal(t, want[1], splitItems(t, p))

			// Reopened: the same dead letters, and ids go on.
			l = openT(t, dir, Options{SegmentSize: 64 << 10})
			defer l.Close()
			dls, err = l.DeadLetters()
			require.NoError(t, err)
			check(dls)
			id, err := l.DeadLetter(nil, DeadMeta{Reason: "empty"})
			require.NoError(t, err)
			assert.Equal(t, uint64(4), id)
			d, p, err := l.ReadDeadLetter(4)
			require.NoError(t, err)
			assert.Empty(t, p)
			assert.Zero(t, d.Items)
			assert.WithinDuration(t, time.Now(), d.Time, time.Hour, "a zero Time means now")
			assert.Zero(t, l.Stats().DeadCorrupt)
		})
	}
}

func TestDeadLetterRefusals(t *testing.T) {
	l := openT(t, t.TempDir(), Options{SegmentSize: 64 << 10, MaxRecord: 1000})
	defer l.Close()
	_, err := l.DeadLetter(AppendFrame(nil, make([]byte, 1000)), DeadMeta{})
	require.ErrorIs(t, err, ErrTooLarge)
	_, err = l.DeadLetter(nil, DeadMeta{Records: make([]uint64, maxDeadRecords+1)})
	require.ErrorIs(t, err, ErrTooLarge)
	_, err = l.DeadLetter([]byte{0x05, 'a'}, DeadMeta{})
	require.Error(t, err, "a payload that is not frames")
	// A long reason is cut, at a rune boundary.
	id, err := l.DeadLetter(nil, DeadMeta{Reason: strings.Repeat("é", maxDeadReason)})
	require.NoError(t, err)
	assert.Equal(t, uint64(1), id, "refusals use no id")
	d, _, err := l.ReadDeadLetter(id)
	require.NoError(t, err)
	assert.LessOrEqual(t, len(d.Reason), maxDeadReason)
	assert.Greater(t, len(d.Reason), maxDeadReason-4)
	assert.Equal(t, strings.Repeat("é", len(d.Reason)/2), d.Reason)
}

func TestDeadLetterPurge(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, smallOpts())
	for i := range 5 {
		p, _ := deadBatch(fmt.Sprint(i), 3)
		_, err := l.DeadLetter(p, DeadMeta{Reason: "x"})
		require.NoError(t, err)
	}
	n, err := l.PurgeDeadLetters(2, 4, 4, 7)
	require.ErrorIs(t, err, ErrNotFound)
	assert.Contains(t, err.Error(), "[7]")
	assert.Equal(t, 2, n)
	dls, err := l.DeadLetters()
	require.NoError(t, err)
	assert.Equal(t, []uint64{1, 3, 5}, deadIDs(dls))
	assert.Equal(t, 3, l.Stats().DeadLetters)
	assert.NoFileExists(t, filepath.Join(dir, deadDirName, deadFileName(2)))
	_, _, err = l.ReadDeadLetter(2)
	require.ErrorIs(t, err, ErrNotFound)
	n, err = l.PurgeDeadLetters(2)
	require.ErrorIs(t, err, ErrNotFound)
	assert.Zero(t, n)

	n, err = l.PurgeDeadLetters() // all
	require.NoError(t, err)
	assert.Equal(t, 3, n)
	st := l.Stats()
	assert.Zero(t, st.DeadLetters)
	assert.Zero(t, st.DeadBytes)
	require.NoError(t, l.Close())

	// Ids are never reused, even with every dead letter purged.
	l = openT(t, dir, smallOpts())
	defer l.Close()
	assert.Zero(t, l.Stats().DeadCorrupt, "purged is not lost")
	id, err := l.DeadLetter(nil, DeadMeta{})
	require.NoError(t, err)
	assert.Equal(t, uint64(6), id)
}

// A crash between a purge's tombstone and its unlink leaves the file: it
// is not listed, and the next Open deletes it without counting a loss.
func TestDeadLetterPurgeInterruptedBeforeUnlink(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, smallOpts())
	for i := range 3 {
		p, _ := deadBatch(fmt.Sprint(i), 3)
		_, err := l.DeadLetter(p, DeadMeta{})
		require.NoError(t, err)
	}
	path := filepath.Join(dir, deadDirName, deadFileName(2))
	saved, err := os.ReadFile(path)
	require.NoError(t, err)
	_, err = l.PurgeDeadLetters(2)
	require.NoError(t, err)
	require.NoError(t, l.Close())
	require.NoError(t, os.WriteFile(path, saved, 0o600))

	dls, err := ListDeadLetters(dir)
	require.NoError(t, err)
	assert.Equal(t, []uint64{1, 3}, deadIDs(dls))
	_, _, err = ReadDeadLetter(dir, 2)
	require.ErrorIs(t, err, ErrNotFound)

	l = openT(t, dir, smallOpts())
	defer l.Close()
	assert.NoFileExists(t, path)
	st := l.Stats()
	assert.Zero(t, st.DeadCorrupt)
	assert.Equal(t, 2, st.DeadLetters)
}

func TestDeadLetterRequeueOfflineThenReplay(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, smallOpts())
	// Some main-log traffic first: one record acknowledged, one pending.
	id1, err := l.Append(AppendFrame(nil, []byte("pending")))
	require.NoError(t, err)
	id2, err := l.Append(AppendFrame(nil, []byte("delivered")))
	require.NoError(t, err)
	require.NoError(t, l.Ack(id2))
	var want []string
	for i := range 3 {
		p, items := deadBatch(fmt.Sprint(i), 4)
		_, err := l.DeadLetter(p, DeadMeta{Records: []uint64{id1}})
		require.NoError(t, err)
		if i != 1 {
			want = append(want, items...)
		}
	}
	require.NoError(t, l.Close())

	n, err := RequeueDeadLetters(dir, Options{}, 1, 3)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	dls, err := ListDeadLetters(dir)
	require.NoError(t, err)
	assert.Equal(t, []uint64{2}, deadIDs(dls))
	_, err = RequeueDeadLetters(dir, Options{}, 9)
	require.ErrorIs(t, err, ErrNotFound)

	l = openT(t, dir, smallOpts())
	defer l.Close()
	var got []string
	for _, p := range replayAll(t, l) {
		got = append(got, splitItems(t, p)...)
	}
	assert.ElementsMatch(t, append([]string{"pending"}, want...), got)
	assert.Equal(t, 1, l.Stats().DeadLetters)
	assert.Zero(t, l.Stats().Corrupt)
}

// A dead letter from a log with a larger record limit is split between
// items when requeued into one with a smaller limit.
func TestDeadLetterRequeueSplitsOverTheLimit(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, smallOpts())
	p, items := deadBatch("big", 100) // ~5 KB
	_, err := l.DeadLetter(p, DeadMeta{})
	require.NoError(t, err)
	require.NoError(t, l.Close())
	n, err := RequeueDeadLetters(dir, Options{SegmentSize: 64 << 10, MaxRecord: 1024}, 1)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	l = openT(t, dir, Options{SegmentSize: 64 << 10, MaxRecord: 1024})
	defer l.Close()
	var got []string
	recs := replayAll(t, l)
	assert.Greater(t, len(recs), 4)
	ids := make([]uint64, 0, len(recs))
	for id := range recs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		got = append(got, splitItems(t, recs[id])...)
	}
	assert.Equal(t, items, got)
}

func TestDeadLetterRequeueOnOpenLog(t *testing.T) {
	l := openT(t, t.TempDir(), smallOpts())
	defer l.Close()
	for i := range 4 {
		p, _ := deadBatch(fmt.Sprint(i), 2)
		_, err := l.DeadLetter(p, DeadMeta{Reason: fmt.Sprint(i)})
		require.NoError(t, err)
	}
	var seen []uint64
	boom := errors.New("queue closed")
	n, err := l.RequeueDeadLetters(nil, func(d DeadLetter, p []byte) error {
		if d.ID == 3 {
			return boom
		}
		seen = append(seen, d.ID)
		assert.Equal(t, []string{d.Reason + "/0 " + strings.Repeat("x", 40), d.Reason + "/1 " + strings.Repeat("x", 40)}, splitItems(t, p))
		// fn may call the Log: here it dead-letters the batch again.
		_, err := l.DeadLetter(p, DeadMeta{Reason: "again"})
		return err
	})
	require.ErrorIs(t, err, boom)
	assert.Equal(t, 2, n)
	assert.Equal(t, []uint64{1, 2}, seen)
	dls, err := l.DeadLetters()
	require.NoError(t, err)
	assert.Equal(t, []uint64{3, 4, 5, 6}, deadIDs(dls), "what fn took is purged; the failure and the rest stay")
}

// Many goroutines dead-letter, list, read and purge at once: ids are
// unique and the count adds up.
func TestDeadLetterConcurrent(t *testing.T) {
	l := openT(t, t.TempDir(), smallOpts())
	defer l.Close()
	const G, N = 8, 20
	var mu sync.Mutex
	ids := map[uint64]bool{}
	purged := 0
	var wg sync.WaitGroup
	for g := range G {
		wg.Go(func() {
			for i := range N {
				p, _ := deadBatch(fmt.Sprintf("%d-%d", g, i), 2)
				id, err := l.DeadLetter(p, DeadMeta{})
				if !assert.NoError(t, err) {
					return
				}
				mu.Lock()
				assert.False(t, ids[id], "id %d issued twice", id)
				ids[id] = true
				mu.Unlock()
				if i%4 == 0 {
					n, err := l.PurgeDeadLetters(id)
					assert.NoError(t, err)
					mu.Lock()
					purged += n
					mu.Unlock()
				}
				_, err = l.DeadLetters()
				assert.NoError(t, err)
			}
		})
	}
	wg.Wait()
	assert.Len(t, ids, G*N)
	dls, err := l.DeadLetters()
	require.NoError(t, err)
	assert.Len(t, dls, G*N-purged)
	assert.Equal(t, G*N-purged, l.Stats().DeadLetters)
}

// MaxBytes is one budget for segments and dead letters.
func TestDeadLetterSharesMaxBytes(t *testing.T) {
	opts := Options{SegmentSize: 64 << 10, MaxBytes: 256 << 10, Compression: NoCompression, noSpare: true}
	l := openT(t, t.TempDir(), opts)
	defer l.Close()
	rng := rand.New(rand.NewPCG(1, 1))
	big := make([]byte, 60000)
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	p := AppendFrame(nil, big)
	for range 4 {
		_, err := l.DeadLetter(p, DeadMeta{})
		require.NoError(t, err)
	}
	_, err := l.DeadLetter(p, DeadMeta{})
	require.ErrorIs(t, err, ErrFull)
	_, err = l.Append(AppendFrame(nil, []byte("x")))
	require.ErrorIs(t, err, ErrFull, "a new segment would pass MaxBytes too")
	assert.Equal(t, 4, l.Stats().DeadLetters)
	// Room for a segment and its spare (the roll prepares the next one),
	// and one more dead letter.
	_, err = l.PurgeDeadLetters(1, 2, 3)
	require.NoError(t, err)
	_, err = l.Append(AppendFrame(nil, []byte("x")))
	require.NoError(t, err)
	_, err = l.DeadLetter(p, DeadMeta{})
	require.NoError(t, err)
}

// Damage to dead-letter files is counted exactly: a lost one (emptied,
// deleted) once; a damaged file stays in place, listed with its Damage, and
// counts at every Open until it is purged (an operator must see it: a
// queue parking keys holds the keys parked after it).
func TestDeadLetterDamageQuarantinedAndCounted(t *testing.T) {
	dir := t.TempDir()
	ddir := filepath.Join(dir, deadDirName)
	l := openT(t, dir, smallOpts())
	for i := range 7 {
		p, _ := deadBatch(fmt.Sprint(i), 3)
		_, err := l.DeadLetter(p, DeadMeta{Reason: fmt.Sprint(i)})
		require.NoError(t, err)
	}
	_, err := l.PurgeDeadLetters(6)
	require.NoError(t, err)
	require.NoError(t, l.Close())
	file := func(id uint64) string { return filepath.Join(ddir, deadFileName(id)) }
	// 2: a bit flipped in the record; 3: emptied; 4: deleted; 5: junk
	// appended after its intact record (kept); 7: the last, deleted.
	b, err := os.ReadFile(file(2))
	require.NoError(t, err)
	b[segmentHeaderSize+recordHeaderSize+3] ^= 0x10
	require.NoError(t, os.WriteFile(file(2), b, 0o600))
	require.NoError(t, os.Truncate(file(3), 0))
	require.NoError(t, os.Remove(file(4)))
	f, err := os.OpenFile(file(5), os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.Write(bytes.Repeat([]byte{0xAB}, 40))
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.NoError(t, os.Remove(file(7)))

	// The offline listing shows the damage without changing anything.
	dls, err := ListDeadLetters(dir)
	require.NoError(t, err)
	assert.Equal(t, []uint64{1, 2, 3, 5}, deadIDs(dls))
	assert.NotNil(t, dls[1].Damage)
	assert.NotNil(t, dls[2].Damage)

	l = openT(t, dir, smallOpts())
	st := l.Stats()
	assert.Equal(t, uint64(4), st.DeadCorrupt, "2 damaged, 3, 4 and 7 lost")
	assert.Equal(t, uint64(1), st.Quarantined, "5 cut to its record")
	assert.Zero(t, st.Corrupt, "the main log lost nothing")
	dls, err = l.DeadLetters()
	require.NoError(t, err)
	assert.Equal(t, []uint64{1, 2, 5}, deadIDs(dls))
	for _, d := range dls {
		assert.Equal(t, d.ID == 2, d.Damage != nil, "dead letter %d", d.ID)
	}
	_, _, err = l.ReadDeadLetter(2)
	require.ErrorIs(t, err, ErrCorrupt)
	_, p, err := l.ReadDeadLetter(5)
	require.NoError(t, err)
	assert.Len(t, splitItems(t, p), 3)
	assert.FileExists(t, file(2), "damaged: stays until purged")
	assert.FileExists(t, file(5)+corruptSuffix)
	assert.NoFileExists(t, file(3))
	id, err := l.DeadLetter(nil, DeadMeta{})
	require.NoError(t, err)
	assert.Equal(t, uint64(8), id, "lost ids are not reused")
	require.NoError(t, l.Close())

	l = openT(t, dir, smallOpts())
	defer l.Close()
	st = l.Stats()
	assert.Equal(t, uint64(1), st.DeadCorrupt, "the lost ones counted once; 2, still there, again")
	assert.Zero(t, st.Quarantined)
	assert.Equal(t, 4, st.DeadLetters)
	n, err := l.RequeueDeadLetters(nil, func(DeadLetter, []byte) error { return nil })
	require.NoError(t, err, "all of them: the damaged one is left")
	assert.Equal(t, 3, n)
	n, err = l.PurgeDeadLetters(2)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.NoFileExists(t, file(2))
}

// Whatever stands where the dead-letter log should be is moved aside.
func TestDeadLetterStrays(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, deadDirName), []byte("not a dir"), 0o600))
	l := openT(t, dir, smallOpts())
	assert.Equal(t, uint64(1), l.Stats().Quarantined)
	_, err := l.DeadLetter(nil, DeadMeta{})
	require.NoError(t, err)
	require.NoError(t, l.Close())
	assert.FileExists(t, filepath.Join(dir, deadDirName+corruptSuffix))

	// An interrupted write (a .tmp never renamed) and an ACK that is a
	// directory.
	ddir := filepath.Join(dir, deadDirName)
	require.NoError(t, os.WriteFile(filepath.Join(ddir, deadFileName(2)+tmpSuffix), []byte("half"), 0o600))
	require.NoError(t, os.Rename(filepath.Join(ddir, ackFileName), filepath.Join(ddir, "saved")))
	require.NoError(t, os.Mkdir(filepath.Join(ddir, ackFileName), 0o700))
	l = openT(t, dir, smallOpts())
	defer l.Close()
	st := l.Stats()
	assert.Equal(t, 1, st.DeadLetters)
	assert.Zero(t, st.DeadCorrupt)
	assert.NoFileExists(t, filepath.Join(ddir, deadFileName(2)+tmpSuffix))
	id, err := l.DeadLetter(nil, DeadMeta{})
	require.NoError(t, err)
	assert.Equal(t, uint64(2), id)
}

func TestDeadMetaRoundTrip(t *testing.T) {
	for _, m := range []DeadMeta{
		{},
		{Time: time.Unix(0, 1), Reason: "x", Records: []uint64{1, 1 << 63}, Attempts: 3},
		{Time: time.Unix(-5, 0), Reason: strings.Repeat("r", maxDeadReason), Attempts: 1<<31 - 1},
	} {
		b := appendDeadMeta(nil, m)
		b = append(b, "items"...)
		got, rest, err := parseDeadMeta(b)
		require.NoError(t, err)
		assert.Equal(t, "items", string(rest))
		assert.True(t, m.Time.Equal(got.Time))
		assert.Equal(t, m.Reason, got.Reason)
		assert.Equal(t, m.Records, got.Records)
		assert.Equal(t, m.Attempts, got.Attempts)
	}
	for _, bad := range [][]byte{nil, {2}, {1}, {1, 0}, {1, 0, 0, 5, 'a'}, {1, 0, 0, 0, 3, 1}, {1, 0, 0, 0, 1, 0x80}} {
		_, _, err := parseDeadMeta(bad)
		require.ErrorIs(t, err, ErrCorrupt, "%x", bad)
	}
}

func FuzzDeadMeta(f *testing.F) {
	f.Add(appendDeadMeta(nil, DeadMeta{}))
	f.Add(append(appendDeadMeta(nil, DeadMeta{Time: time.Unix(1, 2), Reason: "boom", Records: []uint64{7, 8}, Attempts: 2}), AppendFrame(nil, []byte("item"))...))
	f.Add(append(appendDeadMeta(nil, DeadMeta{Reason: "parked", Keys: []uint64{1 << 40}, Parked: true}), AppendFrame(nil, []byte("item"))...))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, rest, err := parseDeadMeta(b)
		if err != nil {
			require.ErrorIs(t, err, ErrCorrupt)
			return
		}
		// What parses re-encodes to something that parses the same.
		m2, rest2, err := parseDeadMeta(append(appendDeadMeta(nil, m), rest...))
		require.NoError(t, err)
		require.Equal(t, rest, rest2)
		require.True(t, m.Time.Equal(m2.Time))
		require.Equal(t, m.Reason, m2.Reason)
		require.Equal(t, m.Records, m2.Records)
		require.Equal(t, m.Attempts, m2.Attempts)
		require.Equal(t, m.Keys, m2.Keys)
		require.Equal(t, m.Parked, m2.Parked)
	})
}

// FuzzDeadFile feeds arbitrary bytes to the dead-letter file decoder and
// to recovery's scan of it: no panic, and a dead letter that decodes has
// consistent counts.
func FuzzDeadFile(f *testing.F) {
	dir := f.TempDir()
	l, err := Open(dir, Options{SegmentSize: 64 << 10})
	require.NoError(f, err)
	p, _ := deadBatch("seed", 4)
	_, err = l.DeadLetter(p, DeadMeta{Reason: "boom", Records: []uint64{3}})
	require.NoError(f, err)
	_, err = l.DeadLetter(nil, DeadMeta{})
	require.NoError(f, err)
	require.NoError(f, l.Close())
	for id := uint64(1); id <= 2; id++ {
		b, err := os.ReadFile(filepath.Join(dir, deadDirName, deadFileName(id)))
		require.NoError(f, err)
		f.Add(b, id)
		f.Add(append(bytes.Clone(b), b[segmentHeaderSize:]...), id)
	}
	// A dead letter sealed under fuzzKey, which the target reads with.
	sdir := f.TempDir()
	l, err = Open(sdir, Options{SegmentSize: 64 << 10, EncryptionKey: fuzzKey})
	require.NoError(f, err)
	_, err = l.DeadLetter(p, DeadMeta{Reason: "sealed", Records: []uint64{5}})
	require.NoError(f, err)
	require.NoError(f, l.Close())
	sealed, err := os.ReadFile(filepath.Join(sdir, deadDirName, deadFileName(1)))
	require.NoError(f, err)
	f.Add(sealed, uint64(1))
	f.Add([]byte{}, uint64(1))
	keys := fuzzKeys()
	f.Fuzz(func(t *testing.T, b []byte, id uint64) {
		if id == 0 {
			id = 1
		}
		sc, _, stored, zero := scanDeadFile(b, id, 1<<20)
		if stored != nil {
			require.False(t, zero)
			require.Equal(t, id, sc.firstID)
			require.LessOrEqual(t, sc.records, 1)
		}
		d, payload, err := decodeDeadFile(b, id, 1<<20, keys)
		if errors.Is(err, ErrKey) {
			require.Nil(t, d.Damage, "a key problem is not damage")
			return
		}
		if err != nil {
			require.ErrorIs(t, err, ErrCorrupt)
			require.NotNil(t, d.Damage)
			return
		}
		n := 0
		require.NoError(t, ForEachItem(payload, func([]byte) error { n++; return nil }))
		require.Equal(t, d.Items, n)
		require.Equal(t, d.Bytes, len(payload))
	})
}

// TestDeadLetterKeysAndParked: Keys and Parked survive a reopen (version 2
// metadata); a dead letter with neither is still written as version 1, so
// releases that predate version 2 read it; keys that do not match the
// items one for one are refused; damage in the new fields is ErrCorrupt.
func TestDeadLetterKeysAndParked(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{SegmentSize: 64 << 10})
	p, items := deadBatch("k", 3)
	keys := []uint64{7, 1 << 63, 7}
	id1, err := l.DeadLetter(p, DeadMeta{Reason: "poison", Keys: keys})
	require.NoError(t, err)
	id2, err := l.DeadLetter(p, DeadMeta{Reason: "parked", Keys: keys, Parked: true})
	require.NoError(t, err)
	id3, err := l.DeadLetter(p, DeadMeta{Reason: "plain"})
	require.NoError(t, err)
	_, err = l.DeadLetter(p, DeadMeta{Keys: []uint64{1, 2}})
	require.Error(t, err, "two keys for three items")
	require.NoError(t, l.Close())

	l = openT(t, dir, Options{SegmentSize: 64 << 10})
	defer l.Close()
	d, got, err := l.ReadDeadLetter(id1)
	require.NoError(t, err)
	assert.Equal(t, keys, d.Keys)
	assert.False(t, d.Parked)
	assert.Equal(t, items, splitItems(t, got))
	d, _, err = l.ReadDeadLetter(id2)
	require.NoError(t, err)
	assert.Equal(t, keys, d.Keys)
	assert.True(t, d.Parked)
	d, _, err = l.ReadDeadLetter(id3)
	require.NoError(t, err)
	assert.Empty(t, d.Keys)
	assert.False(t, d.Parked)

	// The encodings themselves: version 1 without keys, 2 with them.
	plain := appendDeadMeta(nil, DeadMeta{Reason: "x"})
	assert.Equal(t, byte(deadMetaVersion), plain[0])
	keyed := appendDeadMeta(nil, DeadMeta{Reason: "x", Keys: []uint64{5}, Parked: true})
	assert.Equal(t, byte(deadMetaKeyed), keyed[0])
	m, rest, err := parseDeadMeta(append(keyed, 'z'))
	require.NoError(t, err)
	assert.Equal(t, []uint64{5}, m.Keys)
	assert.True(t, m.Parked)
	assert.Equal(t, []byte("z"), rest)
	// Damage in the version 2 fields: unknown flags, a key count past the
	// bytes, a truncated key.
	for _, bad := range [][]byte{
		append(keyed[:len(keyed)-3:len(keyed)-3], 0x02, 0x00),
		append(keyed[:len(keyed)-3:len(keyed)-3], 0x01, 0x7f),
		append(keyed[:len(keyed)-3:len(keyed)-3], 0x01, 0x01, 0x80),
	} {
		_, _, err := parseDeadMeta(bad)
		require.ErrorIs(t, err, ErrCorrupt, "%x", bad)
	}
}

package wal

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// damageBase is a closed WAL directory with a known history: which ids
// were written (and their payloads) and which were acknowledged.
type damageBase struct {
	files    map[string][]byte
	payloads map[uint64][]byte
	acked    map[uint64]bool
	segs     []string // segment file names, in id order
}

// damageKey encrypts the damage bases built with encrypted set; the
// damaged copies are all opened with it (it reads plaintext bases too).
var damageKey = testKey(9)

// buildDamageBase writes a log of a few hundred records of random sizes
// over small segments, acknowledging a random share of them in random
// order (so that some segments, not only the oldest, are deleted), and
// closes it. With encrypted, every record is sealed under damageKey.
func buildDamageBase(t *testing.T, seed uint64, encrypted bool) *damageBase {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 99))
	dir := fastTempDir(t)
	b := &damageBase{files: map[string][]byte{}, payloads: map[uint64][]byte{}, acked: map[uint64]bool{}}
	opts := Options{SegmentSize: 4096, NoSync: true, Compression: Compression(rng.IntN(3)), noSpare: true}
	if encrypted {
		opts.EncryptionKey = damageKey
	}
	l := openT(t, dir, opts)
	var ids []uint64
	n := 150 + rng.IntN(200)
	for i := 0; i < n; i++ {
		p := make([]byte, 1+rng.IntN(300))
		for j := range p {
			p[j] = byte('a' + rng.IntN(4)) // compressible, mostly
		}
		var id uint64
		var err error
		if rng.IntN(4) == 0 {
			// A keyed record (format.go): Replay hands out its items
			// alone, which is what is compared.
			p = AppendFrame(nil, p)
			id, err = l.WriteKeyed(AppendKeys(p, []uint64{rng.Uint64()}))
		} else {
			id, err = l.Append(p)
		}
		require.NoError(t, err)
		b.payloads[id] = p
		ids = append(ids, id)
	}
	// Acknowledge whole runs (so segments empty out) and scattered ids.
	ackShare := rng.Float64()
	for i := 0; i < len(ids); {
		run := 1 + rng.IntN(40)
		ack := rng.Float64() < ackShare
		for ; run > 0 && i < len(ids); run, i = run-1, i+1 {
			if ack || rng.IntN(10) == 0 {
				b.acked[ids[i]] = true
			}
		}
	}
	order := slices.Clone(ids)
	rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	for _, id := range order {
		if b.acked[id] {
			require.NoError(t, l.Ack(id))
		}
	}
	require.NoError(t, l.Close())
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		require.NoError(t, err)
		b.files[e.Name()] = data
		if _, ok := parseSegmentName(e.Name()); ok {
			b.segs = append(b.segs, e.Name())
		}
	}
	slices.Sort(b.segs)
	return b
}

// damageCase applies one random damage scenario to a copy of the base
// files and says what it did. Segment damage may come several at a time;
// ack log damage comes alone (with the acknowledgement state damaged, ids
// missing from disk are unknowable, and Open does not count them).
// flipsOnly is the number of bit flips when every damage was a bit flip
// past a segment header (each can cost one record at most), else -1.
func (b *damageBase) damageCase(rng *rand.Rand) (files map[string][]byte, what string, ackDamage bool, flipsOnly int) {
	files = map[string][]byte{}
	for name, data := range b.files {
		files[name] = bytes.Clone(data)
	}
	if rng.IntN(8) == 0 || len(b.segs) == 0 {
		ack := files[ackFileName]
		switch rng.IntN(3) {
		case 0:
			g := make([]byte, rng.IntN(200))
			for i := range g {
				g[i] = byte(rng.Uint32())
			}
			files[ackFileName] = g
			return files, "garbage ACK", true, -1
		case 1:
			off := rng.IntN(len(ack))
			ack[off] ^= 1 << rng.IntN(8)
			return files, fmt.Sprintf("ACK bit flip at %d", off), true, -1
		default:
			delete(files, ackFileName)
			return files, "ACK deleted", true, -1
		}
	}
	for k := 1 + rng.IntN(2); k > 0; k-- {
		name := b.segs[rng.IntN(len(b.segs))]
		if rng.IntN(3) == 0 {
			name = b.segs[len(b.segs)-1] // the last one, often
		}
		data, ok := files[name]
		if !ok || len(data) == 0 {
			continue
		}
		used := usedLength(data)
		switch rng.IntN(6) {
		case 0:
			off := rng.IntN(max(used, 1))
			data[off] ^= 1 << rng.IntN(8)
			what += fmt.Sprintf("; %s bit flip at %d", name, off)
			if off >= segmentHeaderSize && flipsOnly >= 0 {
				flipsOnly++
			} else {
				flipsOnly = -1
			}
		case 1:
			flipsOnly = -1
			off := rng.IntN(used + 1)
			files[name] = data[:off]
			what += fmt.Sprintf("; %s cut at %d", name, off)
		case 2:
			flipsOnly = -1
			bounds := recordBoundaries(data)
			off := bounds[rng.IntN(len(bounds))]
			files[name] = data[:off]
			what += fmt.Sprintf("; %s cut at record boundary %d", name, off)
		case 3:
			flipsOnly = -1
			delete(files, name)
			what += "; " + name + " deleted"
		case 4:
			flipsOnly = -1
			files[name] = nil
			what += "; " + name + " emptied"
		default:
			flipsOnly = -1
			files[name] = make([]byte, len(data))
			what += "; " + name + " zero-filled"
		}
	}
	return files, what, false, flipsOnly
}

// usedLength is the end of a segment's records (a scan of the bytes).
func usedLength(data []byte) int {
	b := recordBoundaries(data)
	return int(b[len(b)-1])
}

// recordBoundaries returns the offsets where records start, and the end.
func recordBoundaries(data []byte) []int64 {
	if len(data) < segmentHeaderSize {
		return []int64{int64(len(data))}
	}
	out := []int64{segmentHeaderSize}
	_, _ = scanSegment(data, 0, 1<<20, func(off int64, h recordHeader, stored []byte) error {
		out = append(out, off+recordSize(len(stored)))
		return nil
	})
	return out
}

// TestRandomDamageCountsExactLoss damages copies of WAL directories at
// random — bit flips, cuts anywhere and at record boundaries, deleted,
// emptied and zero-filled segments (the last one included), a garbage,
// flipped or deleted ack log — and checks that the loss Open counts equals
// the true loss: the unacknowledged records that do not come back. Every
// record that comes back is one that was written, with its payload. A
// second Open counts nothing more and replays the same. Inspect predicts
// the count Open makes. Bit flips past a header cost at most the records
// they hit. Half the bases are encrypted: damage to sealed
// records is found and counted alike (by the CRC, without the key).
// VINEQUEUE_DAMAGE_CASES sets the number of cases (default 1,200; 150
// with -short).
func TestRandomDamageCountsExactLoss(t *testing.T) {
	skipFsync = true
	t.Cleanup(func() { skipFsync = false })
	cases := 1200
	if testing.Short() {
		cases = 150
	}
	if s := os.Getenv("VINEQUEUE_DAMAGE_CASES"); s != "" {
		n, err := strconv.Atoi(s)
		require.NoError(t, err)
		cases = n
	}
	const bases = 8
	var bs []*damageBase
	for i := range bases {
		bs = append(bs, buildDamageBase(t, uint64(i), i >= bases/2))
	}
	root := fastTempDir(t)
	rng := rand.New(rand.NewPCG(42, uint64(cases)))
	for c := 0; c < cases; c++ {
		b := bs[c%bases]
		files, what, ackDamage, flips := b.damageCase(rng)
		what = fmt.Sprintf("case %d (base %d)%s", c, c%bases, what)
		dir := filepath.Join(root, strconv.Itoa(c))
		require.NoError(t, os.Mkdir(dir, 0o700))
		for name, data := range files {
			require.NoError(t, os.WriteFile(filepath.Join(dir, name), data, 0o600))
		}
		report, err := Inspect(dir)
		require.NoError(t, err, what)

		var first []uint64
		for round := 0; round < 2; round++ {
			l, err := Open(dir, Options{SegmentSize: 4096, NoSync: true, noSpare: true, EncryptionKey: damageKey})
			require.NoError(t, err, what)
			var got []uint64
			require.NoError(t, l.Replay(func(id uint64, p []byte, _ []ItemRange) error {
				want, ok := b.payloads[id]
				require.True(t, ok, "%s: replayed id %d was never written", what, id)
				require.Equal(t, want, p, "%s: payload of %d", what, id)
				got = append(got, id)
				return nil
			}), what)
			st := l.Stats()
			require.NoError(t, l.Close(), what)
			if round == 1 {
				require.Zero(t, st.Corrupt, "%s: the second Open counted again", what)
				require.Equal(t, first, got, "%s: the second Open replayed something else", what)
				break
			}
			first = got
			back := map[uint64]bool{}
			for _, id := range got {
				back[id] = true
				if !ackDamage {
					require.False(t, b.acked[id], "%s: acknowledged record %d replayed", what, id)
				}
			}
			var trueLoss uint64
			for id := range b.payloads {
				if !b.acked[id] && !back[id] {
					trueLoss++
				}
			}
			require.Equal(t, trueLoss, st.Corrupt, what)
			if flips >= 0 {
				// The scan goes on after a damaged record: a bit flip
				// costs the record it hit, never the ones after it.
				require.LessOrEqual(t, trueLoss, uint64(flips), what)
			}
			require.Equal(t, trueLoss, report.LostRecords, "%s: Inspect predicted otherwise", what)
			if trueLoss > 0 || report.AckProblem != "" {
				require.True(t, report.Damaged(), what)
			}
		}
		require.NoError(t, os.RemoveAll(dir))
	}
}

package vinequeue

import (
	"fmt"
	"strings"
	"testing"

	"github.com/vineroute/vinequeue/internal/engine"
)

// TestKeyOfVectors pins KeyOf to XXH64 (seed 0): the values come from an
// independent implementation (github.com/cespare/xxhash/v2), and cover each
// path of the algorithm: empty, the byte tail, the 4-byte step, the 8-byte
// step, just below and at one 32-byte stripe, and several stripes with a
// tail. A change here breaks per-key order for anyone who hashes keys with
// another XXH64, or with an older version of this package.
func TestKeyOfVectors(t *testing.T) {
	for _, v := range []struct {
		in   string
		want uint64
	}{
		{"", 0xef46db3751d8e999},
		{"a", 0xd24ec4f1a98c6e5b},
		{"abc", 0x44bc2cf5ad770999},
		{"key-42", 0x8bca139c4fa6fa1e},
		{"0123456789abcdef0123456789abcde", 0x1fdfc63febacfde7},
		{"0123456789abcdef0123456789abcdef", 0x642a94958e71e6c5},
		{strings.Repeat("vinequeue", 13), 0xebd0812035396fc2},
	} {
		if got := KeyOf(v.in); got != v.want {
			t.Errorf("KeyOf(%q) = %#016x, want %#016x", v.in, got, v.want)
		}
	}
}

func TestKeyOfDoesNotAllocate(t *testing.T) {
	long := strings.Repeat("x", 100)
	allocs := testing.AllocsPerRun(100, func() {
		_ = KeyOf("user-1234")
		_ = KeyOf(long)
	})
	if allocs != 0 {
		t.Fatalf("KeyOf allocates %v times per call", allocs)
	}
}

// TestKeyOfSpreadsOverShards checks that typical keys (a prefix and a
// counter) fill the keyed shards evenly: a weak hash would pile them up.
func TestKeyOfSpreadsOverShards(t *testing.T) {
	const keys, shards = 64 * 1000, 64
	var count [shards]int
	for i := range keys {
		count[engine.ShardOf(KeyOf(fmt.Sprintf("key-%d", i)))]++
	}
	for s, n := range count {
		// Expected 1000 per shard, standard deviation ~31: ±20 % is
		// more than six of them.
		if n < keys/shards*4/5 || n > keys/shards*6/5 {
			t.Errorf("shard %d holds %d keys, want %d ± 20 %%", s, n, keys/shards)
		}
	}
}

func BenchmarkKeyOf(b *testing.B) {
	for _, n := range []int{8, 32, 200} {
		s := strings.Repeat("k", n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				_ = KeyOf(s)
			}
		})
	}
}

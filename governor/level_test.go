package governor

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestLevelText(t *testing.T) {
	type doc struct {
		L Level `json:"level"`
	}
	for _, l := range []Level{LevelNormal, LevelSoft, LevelHard} {
		b, err := json.Marshal(doc{l})
		if err != nil {
			t.Fatal(err)
		}
		if want := `{"level":"` + l.String() + `"}`; string(b) != want {
			t.Fatalf("%s, want %s", b, want)
		}
		var back doc
		if err := json.Unmarshal(b, &back); err != nil || back.L != l {
			t.Fatalf("round trip of %v: %v, %v", l, back.L, err)
		}
	}
	var l Level
	if err := l.UnmarshalText([]byte("HARD")); err != nil || l != LevelHard {
		t.Fatalf("HARD: %v %v", l, err)
	}
	if err := l.UnmarshalText([]byte("medium")); !errors.Is(err, ErrUnknownLevel) {
		t.Fatalf("medium: %v", err)
	}
	if _, err := json.Marshal(doc{Level(7)}); !errors.Is(err, ErrUnknownLevel) {
		t.Fatalf("Level(7): %v", err)
	}
}

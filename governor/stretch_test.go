package governor

import "testing"

// TestStretch: a Stretch stays the same while the level does, and differs
// once the level has changed, even back to what it was.
func TestStretch(t *testing.T) {
	g := mustNew(t, Options{Limit: 100, Soft: 0.5, Hard: 0.9, Hysteresis: -1})
	g.Add(95)
	hard := g.Stretch()
	if hard.Level() != LevelHard {
		t.Fatalf("Stretch().Level() = %v at 95 of 100, want hard", hard.Level())
	}
	g.Add(3) // still hard
	if g.Stretch() != hard {
		t.Error("the stretch changed while the level stayed hard")
	}
	g.Add(-40) // 58 of 100: soft
	if s := g.Stretch(); s == hard || s.Level() != LevelSoft {
		t.Errorf("after falling to soft: Stretch %v (level %v), the hard one was %v", s, s.Level(), hard)
	}
	g.Add(40) // hard again: a new stretch
	if s := g.Stretch(); s == hard || s.Level() != LevelHard {
		t.Errorf("back at hard: Stretch %v (level %v) should differ from the first hard stretch %v", s, s.Level(), hard)
	}
}

package policy

import (
	"regexp/syntax"
	"unicode"
	"unicode/utf8"
)

// re2ProgramSize returns an upper bound on the size of the RE2 program
// Envoy compiles v to (RE2::ProgramSize, which Envoy checks against
// re2.max_program_size.error_level), or -1 when v does not parse.
//
// Go's own program is no measure: Go matches runes, RE2 matches bytes, so
// one Unicode class that is a single Go instruction is a tree of UTF-8
// byte ranges in RE2 (`[\p{L}\p{N}]{1000}` is 1,000 Go instructions and
// far more RE2 ones). So this walks the parsed, simplified expression (Go
// and RE2 simplify repetitions alike: x{2,4} is xx(x(x)?)?) and counts
// what RE2's compiler emits, always rounding up:
//
//   - a literal rune is one byte range per UTF-8 byte;
//   - a character class is the alternation of its ranges split into UTF-8
//     byte sequences, with no sharing counted (RE2 shares suffixes and
//     prefixes, so it only emits fewer);
//   - *, + and ? each add an alternation (two for * of an expression that
//     can match empty), alternatives one each, a capture two, an anchor or
//     \b one.
//
// RE2 then flattens the program: alternation instructions disappear and
// each of their two branches may cost a jump, so every alternation
// counts 2 and every other instruction 1. The unanchored-search prefix
// (.*?), the fail and the match instruction are added as RE2 adds them.
func re2ProgramSize(v string) int {
	re, err := syntax.Parse(v, syntax.Perl)
	if err != nil {
		return -1
	}
	re = re.Simplify()
	const (
		fail, match  = 1, 1
		unanchored   = 1 + alt // .*? : any byte, in a loop
		captureWhole = 2       // in case a version captures the whole match
	)
	var c re2Counter
	return fail + c.count(re) + match + unanchored + captureWhole
}

// alt is what one alternation instruction may cost once flattened.
const alt = 2

// re2Counter counts RE2 instructions, remembering shared subexpressions
// (Simplify repeats a pointer, not a copy, for x{n}).
type re2Counter struct {
	seen map[*syntax.Regexp]int
}

func (c *re2Counter) count(re *syntax.Regexp) int {
	if n, ok := c.seen[re]; ok {
		return n
	}
	n := c.uncached(re)
	if c.seen == nil {
		c.seen = make(map[*syntax.Regexp]int)
	}
	c.seen[re] = n
	return n
}

func (c *re2Counter) uncached(re *syntax.Regexp) int {
	sum := func() int {
		n := 0
		for _, s := range re.Sub {
			n += c.count(s)
		}
		return n
	}
	switch re.Op {
	case syntax.OpNoMatch:
		return 0
	case syntax.OpEmptyMatch:
		return 1 // a no-op instruction
	case syntax.OpLiteral:
		n := 0
		for _, r := range re.Rune {
			if re.Flags&syntax.FoldCase != 0 {
				n += foldedRuneSize(r)
			} else {
				n += utf8.RuneLen(max(r, 0))
			}
		}
		return n
	case syntax.OpCharClass:
		return classSize(re.Rune)
	case syntax.OpAnyCharNotNL:
		return classSize([]rune{0, '\n' - 1, '\n' + 1, unicode.MaxRune})
	case syntax.OpAnyChar:
		return classSize([]rune{0, unicode.MaxRune})
	case syntax.OpBeginLine, syntax.OpEndLine, syntax.OpBeginText, syntax.OpEndText,
		syntax.OpWordBoundary, syntax.OpNoWordBoundary:
		return 1 // an empty-width instruction
	case syntax.OpCapture:
		return 2 + sum()
	case syntax.OpStar:
		if nullable(re.Sub[0]) {
			return 2*alt + sum() // RE2 compiles (x+)? for a nullable x
		}
		return alt + sum()
	case syntax.OpPlus, syntax.OpQuest:
		return alt + sum()
	case syntax.OpConcat:
		return sum()
	case syntax.OpAlternate:
		return (len(re.Sub)-1)*alt + sum()
	case syntax.OpRepeat:
		// Simplify expands every repetition; should one remain, count
		// its largest expansion with an alternation per optional copy.
		copies := max(re.Max, re.Min, 1)
		return copies * (alt + sum())
	}
	return 2 * len(re.String()) // unknown: be generous
}

// nullable reports whether re can match the empty string.
func nullable(re *syntax.Regexp) bool {
	switch re.Op {
	case syntax.OpEmptyMatch, syntax.OpStar, syntax.OpQuest,
		syntax.OpBeginLine, syntax.OpEndLine, syntax.OpBeginText, syntax.OpEndText,
		syntax.OpWordBoundary, syntax.OpNoWordBoundary:
		return true
	case syntax.OpCapture, syntax.OpPlus:
		return nullable(re.Sub[0])
	case syntax.OpRepeat:
		return re.Min == 0 || nullable(re.Sub[0])
	case syntax.OpConcat:
		for _, s := range re.Sub {
			if !nullable(s) {
				return false
			}
		}
		return true
	case syntax.OpAlternate:
		for _, s := range re.Sub {
			if nullable(s) {
				return true
			}
		}
		return false
	}
	return false
}

// foldedRuneSize counts a case-insensitive literal rune, which RE2
// matches as the class of all its case variants: one folding byte range
// for the ASCII ones, the UTF-8 bytes of each other one ((?i)k is k, K and
// the Kelvin sign U+212A), and an alternation between them.
func foldedRuneSize(r rune) int {
	n, ascii, others := 0, false, false
	for f := r; ; {
		if f < utf8.RuneSelf {
			ascii = true
		} else {
			others = true
			n += utf8.RuneLen(f) + alt
		}
		if f = unicode.SimpleFold(f); f == r {
			break
		}
	}
	switch {
	case ascii && others:
		n += 1 + alt
	case ascii:
		n = 1
	}
	return n
}

// classSize counts a character class given as sorted lo, hi rune pairs:
// each range is split into UTF-8 byte sequences (as RE2 and every UTF-8
// automaton split them), and each sequence of k byte ranges is counted as
// k instructions plus the alternation that joins it to the others.
func classSize(ranges []rune) int {
	n := 0
	for i := 0; i+1 < len(ranges); i += 2 {
		n += utf8Sequences(ranges[i], ranges[i+1])
	}
	return n
}

// utf8Sequences returns, for the runes lo through hi, the total over the
// UTF-8 byte sequences that cover them of (bytes in the sequence + alt).
func utf8Sequences(lo, hi rune) int {
	if lo > hi {
		return 0
	}
	// Surrogates have no UTF-8 encoding; RE2 and Go skip them.
	const surrLo, surrHi = 0xD800, 0xDFFF
	if lo <= surrHi && hi >= surrLo {
		n := 0
		if lo < surrLo {
			n += utf8Sequences(lo, surrLo-1)
		}
		if hi > surrHi {
			n += utf8Sequences(surrHi+1, hi)
		}
		return n
	}
	// Split at the boundaries between encoded lengths.
	for _, max := range []rune{0x7F, 0x7FF, 0xFFFF} {
		if lo <= max && hi > max {
			return utf8Sequences(lo, max) + utf8Sequences(max+1, hi)
		}
	}
	length := utf8.RuneLen(lo)
	if length == 1 {
		return 1 + alt
	}
	// Split until every continuation byte spans its full range or only
	// the leading bytes differ, as RE2's AddRuneRangeUTF8 does.
	for i := 1; i < length; i++ {
		m := rune(1)<<(6*i) - 1
		if lo&^m != hi&^m {
			if lo&m != 0 {
				return utf8Sequences(lo, lo|m) + utf8Sequences((lo|m)+1, hi)
			}
			if hi&m != m {
				return utf8Sequences(lo, (hi&^m)-1) + utf8Sequences(hi&^m, hi)
			}
		}
	}
	return length + alt
}

package openwrttest

import (
	"errors"
	"strings"
)

// The interpreter understands a small, safe subset of sh: words with single
// quotes, double quotes and backslash escapes; the separators ";", "&",
// newline, "&&" and "||"; the redirections ">", ">>", "<", "N>", "N>>" and
// "N>&M". There is no expansion of any kind: "$(...)", backquotes and "$VAR"
// are literal text, and nothing is ever executed on the host.

type tokKind int

const (
	tWord  tokKind = iota
	tSep           // ; & newline
	tAnd           // &&
	tOr            // ||
	tPipe          // |
	tRedir         // > >> < N> N>> N>&M
)

type token struct {
	kind tokKind
	text string // word text, or the redirection operator
	fd   int    // redirected descriptor
	dup  int    // for >&M: M, else -1
}

var errSyntax = errors.New("syntax error")

func tokenize(s string) ([]token, error) {
	var (
		toks    []token
		word    strings.Builder
		inWord  bool
		quoted  bool // the current word contains a quote or escape
		pending *token
	)
	flush := func() {
		if !inWord {
			return
		}
		w := word.String()
		word.Reset()
		inWord = false
		if pending != nil {
			pending.text2(w)
			toks = append(toks, *pending)
			pending = nil
		} else {
			toks = append(toks, token{kind: tWord, text: w})
		}
		quoted = false
	}
	op := func(t token) error {
		if pending != nil {
			return errSyntax
		}
		toks = append(toks, t)
		return nil
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("unterminated quoted string")
			}
			word.WriteString(s[i+1 : i+1+j])
			inWord, quoted = true, true
			i += j + 1
		case ch == '"':
			inWord, quoted = true, true
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`\n", s[i+1]) >= 0 {
					i++
					if s[i] == '\n' {
						continue
					}
				}
				word.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, errors.New("unterminated quoted string")
			}
		case ch == '\\':
			if i+1 < len(s) && s[i+1] == '\n' {
				i++ // a line continuation is nothing, not even an empty word
				continue
			}
			inWord, quoted = true, true
			if i+1 < len(s) {
				i++
				word.WriteByte(s[i])
			} else {
				word.WriteByte('\\')
			}
		case ch == ' ' || ch == '\t':
			flush()
		case ch == '#' && !inWord:
			for i < len(s) && s[i] != '\n' {
				i++
			}
			i--
		case ch == ';' || ch == '\n' || ch == '&' || ch == '|':
			flush()
			t := token{kind: tSep}
			if ch == '&' && i+1 < len(s) && s[i+1] == '&' {
				t.kind = tAnd
				i++
			} else if ch == '|' && i+1 < len(s) && s[i+1] == '|' {
				t.kind = tOr
				i++
			} else if ch == '|' {
				t.kind = tPipe
			}
			if err := op(t); err != nil {
				return nil, err
			}
		case ch == '>' || ch == '<':
			fd := 1
			if ch == '<' {
				fd = 0
			}
			if inWord && !quoted && (word.String() == "1" || word.String() == "2" || word.String() == "0") {
				fd = int(word.String()[0] - '0')
				word.Reset()
				inWord = false
			} else {
				flush()
			}
			t := token{kind: tRedir, text: string(ch), fd: fd, dup: -1}
			if ch == '>' && i+1 < len(s) && s[i+1] == '>' {
				t.text = ">>"
				i++
			}
			if ch == '>' && t.text == ">" && i+1 < len(s) && s[i+1] == '&' {
				if i+2 < len(s) && s[i+2] >= '0' && s[i+2] <= '2' {
					t.dup = int(s[i+2] - '0')
					i += 2
					if err := op(t); err != nil {
						return nil, err
					}
					continue
				}
				return nil, errSyntax
			}
			if pending != nil {
				return nil, errSyntax
			}
			pending = &t
		default:
			word.WriteByte(ch)
			inWord = true
		}
	}
	flush()
	if pending != nil {
		return nil, errSyntax
	}
	return toks, nil
}

// text2 sets the target of a pending redirection.
func (t *token) text2(target string) { t.text = t.text + "\x00" + target }

type redir struct {
	fd     int
	op     string // ">", ">>", "<", ">&"
	target string
	dup    int
}

type simpleCmd struct {
	argv   []string
	redirs []redir
}

// andOr is one command of a list with the operator that links it to the
// previous one: tSep (always run), tAnd or tOr.
type andOr struct {
	link tokKind
	cmd  simpleCmd
}

func parse(s string) ([]andOr, error) {
	toks, err := tokenize(s)
	if err != nil {
		return nil, err
	}
	var (
		list []andOr
		cur  simpleCmd
		link = tSep
		have bool
	)
	end := func(next tokKind) error {
		if !have {
			if next == tSep && link == tSep {
				return nil // empty command: ";;" is accepted as ";"
			}
			return errSyntax
		}
		list = append(list, andOr{link: link, cmd: cur})
		cur, have, link = simpleCmd{}, false, next
		return nil
	}
	for _, t := range toks {
		switch t.kind {
		case tWord:
			cur.argv = append(cur.argv, t.text)
			have = true
		case tRedir:
			r := redir{fd: t.fd, op: t.text, dup: t.dup}
			if t.dup >= 0 {
				r.op = ">&"
			} else {
				op, target, _ := strings.Cut(t.text, "\x00")
				r.op, r.target = op, target
			}
			cur.redirs = append(cur.redirs, r)
			have = true
		case tPipe:
			return nil, errors.New("pipes are not supported")
		default:
			if err := end(t.kind); err != nil {
				return nil, err
			}
		}
	}
	if have {
		list = append(list, andOr{link: link, cmd: cur})
	} else if link != tSep {
		return nil, errSyntax
	}
	return list, nil
}

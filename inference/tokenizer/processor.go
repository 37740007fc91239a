package tokenizer

import (
	"encoding/json"
	"fmt"
)

// processor adds the special tokens around a single sequence (pairs are
// never encoded here).
type processor interface {
	// added is how many tokens process adds to a single sequence.
	added() int
	process(ids []int32, toks []string) ([]int32, []string)
}

// wrapProcessor puts cls before and sep after the sequence (Roberta and
// Bert processing).
type wrapProcessor struct {
	cls, sep       int32
	clsTok, sepTok string
}

func (p wrapProcessor) added() int { return 2 }

func (p wrapProcessor) process(ids []int32, toks []string) ([]int32, []string) {
	outIDs := make([]int32, 0, len(ids)+2)
	outIDs = append(append(append(outIDs, p.cls), ids...), p.sep)
	outToks := make([]string, 0, len(toks)+2)
	outToks = append(append(append(outToks, p.clsTok), toks...), p.sepTok)
	return outIDs, outToks
}

// templateProcessor follows TemplateProcessing's "single" template.
type templateProcessor struct {
	items []templateItem
	n     int
}

type templateItem struct {
	sequence bool // $A
	ids      []int32
	tokens   []string
}

func (p templateProcessor) added() int { return p.n }

func (p templateProcessor) process(ids []int32, toks []string) ([]int32, []string) {
	outIDs := make([]int32, 0, len(ids)+p.n)
	outToks := make([]string, 0, len(ids)+p.n)
	for _, it := range p.items {
		if it.sequence {
			outIDs = append(outIDs, ids...)
			outToks = append(outToks, toks...)
			continue
		}
		outIDs = append(outIDs, it.ids...)
		outToks = append(outToks, it.tokens...)
	}
	return outIDs, outToks
}

// seqProcessor runs processors in turn (Sequence).
type seqProcessor []processor

func (q seqProcessor) added() int {
	n := 0
	for _, p := range q {
		n += p.added()
	}
	return n
}

func (q seqProcessor) process(ids []int32, toks []string) ([]int32, []string) {
	for _, p := range q {
		ids, toks = p.process(ids, toks)
	}
	return ids, toks
}

// identityProcessor is ByteLevel's post-processor: it only trims offsets.
type identityProcessor struct{}

func (identityProcessor) added() int { return 0 }
func (identityProcessor) process(ids []int32, toks []string) ([]int32, []string) {
	return ids, toks
}

func parseProcessor(raw json.RawMessage) (processor, error) {
	if isNull(raw) {
		return nil, nil
	}
	var head struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(raw, &head); err != nil {
		return nil, fmt.Errorf("%w: post_processor: %w", ErrInvalid, err)
	}
	switch head.Type {
	case "RobertaProcessing", "BertProcessing":
		var v struct {
			Sep [2]json.RawMessage `json:"sep"`
			Cls [2]json.RawMessage `json:"cls"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, head.Type, err)
		}
		var p wrapProcessor
		for _, f := range []struct {
			raw [2]json.RawMessage
			tok *string
			id  *int32
		}{{v.Cls, &p.clsTok, &p.cls}, {v.Sep, &p.sepTok, &p.sep}} {
			if err := json.Unmarshal(f.raw[0], f.tok); err != nil {
				return nil, fmt.Errorf("%w: %s token: %w", ErrInvalid, head.Type, err)
			}
			if err := json.Unmarshal(f.raw[1], f.id); err != nil {
				return nil, fmt.Errorf("%w: %s id: %w", ErrInvalid, head.Type, err)
			}
		}
		return p, nil
	case "TemplateProcessing":
		var v struct {
			Single []struct {
				Sequence *struct {
					ID string `json:"id"`
				} `json:"Sequence"`
				SpecialToken *struct {
					ID string `json:"id"`
				} `json:"SpecialToken"`
			} `json:"single"`
			SpecialTokens map[string]struct {
				IDs    []int32  `json:"ids"`
				Tokens []string `json:"tokens"`
			} `json:"special_tokens"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("%w: TemplateProcessing: %w", ErrInvalid, err)
		}
		var p templateProcessor
		for _, it := range v.Single {
			switch {
			case it.Sequence != nil:
				if it.Sequence.ID != "A" {
					return nil, fmt.Errorf("%w: TemplateProcessing single template uses $%s", ErrInvalid, it.Sequence.ID)
				}
				p.items = append(p.items, templateItem{sequence: true})
			case it.SpecialToken != nil:
				st, ok := v.SpecialTokens[it.SpecialToken.ID]
				if !ok || len(st.IDs) != len(st.Tokens) {
					return nil, fmt.Errorf("%w: TemplateProcessing special token %q", ErrInvalid, it.SpecialToken.ID)
				}
				p.items = append(p.items, templateItem{ids: st.IDs, tokens: st.Tokens})
				p.n += len(st.IDs)
			default:
				return nil, fmt.Errorf("%w: TemplateProcessing item", ErrInvalid)
			}
		}
		return p, nil
	case "ByteLevel":
		return identityProcessor{}, nil
	case "Sequence":
		var v struct {
			Processors []json.RawMessage `json:"processors"`
		}
		if err := json.Unmarshal(raw, &v); err != nil {
			return nil, fmt.Errorf("%w: Sequence post_processor: %w", ErrInvalid, err)
		}
		var q seqProcessor
		for _, r := range v.Processors {
			p, err := parseProcessor(r)
			if err != nil {
				return nil, err
			}
			if p != nil {
				q = append(q, p)
			}
		}
		return q, nil
	}
	return nil, fmt.Errorf("%w: post_processor type %q", ErrUnsupported, head.Type)
}

// Package archtest holds no code: its test enforces the architecture that DESIGN.md
// draws, so that a reviewer's memory does not have to. Every package has a package doc
// comment, and the imports each layer must not have stay out: transport knows nothing
// of Pusher, channels or Redis; the hub sees the engines only through their
// interfaces; the engines never import the node; loadgen is a black-box client.
package archtest

//! The mesh graph as this node knows it: who links to whom, over what, and how well.
//!
//! Pure: built from the link reports that gossip delivered (each node's latest
//! measurements of its neighbours) plus our own, and rendered as JSON for the
//! API / status page or as GraphViz DOT for `meshctl topology --dot`.
//!
//! Links are undirected. The two ends of a link each measure it, and their
//! reports are merged into one [`Link`]:
//!
//! - kind: radio if either end says radio, else WAN if either says WAN, else
//!   LAN. The more pessimistic report wins: an end that reaches its peer over
//!   a router cannot be sharing a subnet with it, whatever the other end thinks.
//! - RTT: the mean of the two reports (both measured the same round trip).
//! - loss: the maximum (loss is usually asymmetric, and a request needs both
//!   directions).
//!
//! A link that only one end has reported is still a link: the other end's
//! report may simply not have arrived yet.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::node::NodeId;

/// The worst round-trip time a report may claim, in ms (10 minutes).
///
/// Reports arrive from other nodes over gossip, so values are clamped into
/// range rather than trusted: an unknown (NaN) or infinite RTT becomes this.
pub const RTT_MAX_MS: f64 = 600_000.0;

/// How two neighbouring nodes reach each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    /// Both ends share an IP subnet (same Ethernet / Wi-Fi segment).
    Lan,
    /// IP, but through at least one router (a tunnel, the internet, a routed mesh).
    Wan,
    /// AX.25 packet radio.
    Rf,
}

impl LinkKind {
    /// The DOT edge style for this kind: LAN solid, WAN dashed, radio dotted.
    fn dot_style(self) -> &'static str {
        match self {
            LinkKind::Lan => "solid",
            LinkKind::Wan => "dashed",
            LinkKind::Rf => "dotted",
        }
    }

    /// The merge rule for the two ends' opinions: the worse kind wins.
    fn merge(self, other: LinkKind) -> LinkKind {
        // The derive(Ord) order is Lan < Wan < Rf, which is exactly "worse".
        self.max(other)
    }
}

/// What one node measured to one of its neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinkReport {
    /// The neighbour measured.
    pub peer: NodeId,
    /// How the neighbour is reached.
    pub kind: LinkKind,
    /// Smoothed round-trip time, ms.
    pub rtt_ms: f64,
    /// Loss fraction, 0.0..=1.0.
    pub loss: f64,
}

/// What the topology shows about a node besides its id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMeta {
    /// Human name (`CALLSIGN-label`), if known. Free text from the network:
    /// may contain anything.
    pub name: Option<String>,
    /// The node's network mode (online / mesh-only / rf-only), if known.
    pub mode: Option<String>,
}

/// One undirected link, both ends' reports merged.
///
/// Invariant: `a < b`; `rtt_ms` is finite and in `0.0..=RTT_MAX_MS`; `loss` is in `0.0..=1.0`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// The end with the smaller id.
    pub a: NodeId,
    /// The end with the larger id.
    pub b: NodeId,
    /// Merged kind: the worse of the two reports.
    pub kind: LinkKind,
    /// Mean of the reported round-trip times, ms.
    pub rtt_ms: f64,
    /// Maximum of the reported loss fractions.
    pub loss: f64,
    /// How many ends reported this link: 1 or 2.
    pub reported_by: u8,
}

impl Link {
    /// A 0..=1 figure for display: `(1 - loss) / (1 + rtt_ms / 100)`.
    ///
    /// 1.0 is a lossless zero-latency link; 100 ms RTT halves it.
    pub fn quality(&self) -> f64 {
        (1.0 - self.loss) / (1.0 + self.rtt_ms / 100.0)
    }

    /// The end that is not `node`, if `node` is an end of this link.
    pub fn other_end(&self, node: &NodeId) -> Option<NodeId> {
        if *node == self.a {
            Some(self.b)
        } else if *node == self.b {
            Some(self.a)
        } else {
            None
        }
    }
}

/// The mesh graph: every node we know of and every reported link between them.
///
/// Nodes and links are kept sorted by id, so [`Topology::to_json`] and
/// [`Topology::to_dot`] are deterministic.
#[derive(Debug, Clone)]
pub struct Topology {
    /// This node; drawn as "self".
    me: NodeId,
    /// Sorted by id: every node named in `meta`, every reporter, every reported peer, and `me`.
    nodes: Vec<(NodeId, NodeMeta)>,
    /// Sorted by `(a, b)`, one entry per unordered pair.
    links: Vec<Link>,
}

/// A report with its numbers forced into range (reports come from other nodes).
fn sanitised(report: &LinkReport) -> (LinkKind, f64, f64) {
    let rtt_ms = if report.rtt_ms.is_nan() {
        RTT_MAX_MS
    } else {
        report.rtt_ms.clamp(0.0, RTT_MAX_MS)
    };
    // Unknown loss counts as total loss.
    let loss = if report.loss.is_nan() {
        1.0
    } else {
        report.loss.clamp(0.0, 1.0)
    };
    (report.kind, rtt_ms, loss)
}

impl Topology {
    /// Builds the graph.
    ///
    /// `meta` names nodes; `reports` holds each node's latest measurements of
    /// its neighbours, keyed by the measuring node, including ours under `me`.
    /// A node reporting itself as its own peer is ignored; if one node lists
    /// the same peer twice, the later entry counts.
    pub fn new(
        me: NodeId,
        meta: &HashMap<NodeId, NodeMeta>,
        reports: &HashMap<NodeId, Vec<LinkReport>>,
    ) -> Topology {
        // (low, high) -> [report by low, report by high]
        type Halves = [Option<(LinkKind, f64, f64)>; 2];
        let mut pairs: BTreeMap<(NodeId, NodeId), Halves> = BTreeMap::new();
        let mut nodes: BTreeMap<NodeId, NodeMeta> = BTreeMap::new();
        nodes.insert(me, NodeMeta::default());
        for (id, m) in meta {
            nodes.insert(*id, m.clone());
        }
        for (reporter, list) in reports {
            nodes.entry(*reporter).or_default();
            for report in list {
                if report.peer == *reporter {
                    continue;
                }
                nodes.entry(report.peer).or_default();
                let (key, side) = if *reporter < report.peer {
                    ((*reporter, report.peer), 0)
                } else {
                    ((report.peer, *reporter), 1)
                };
                pairs.entry(key).or_default()[side] = Some(sanitised(report));
            }
        }
        let links = pairs
            .into_iter()
            .filter_map(|((a, b), halves)| {
                let mut present = halves.iter().flatten();
                let first = *present.next()?;
                let merged = match present.next() {
                    None => Link {
                        a,
                        b,
                        kind: first.0,
                        rtt_ms: first.1,
                        loss: first.2,
                        reported_by: 1,
                    },
                    Some(second) => Link {
                        a,
                        b,
                        kind: first.0.merge(second.0),
                        rtt_ms: (first.1 + second.1) / 2.0,
                        loss: first.2.max(second.2),
                        reported_by: 2,
                    },
                };
                Some(merged)
            })
            .collect();
        Topology {
            me,
            nodes: nodes.into_iter().collect(),
            links,
        }
    }

    /// This node.
    pub fn me(&self) -> NodeId {
        self.me
    }

    /// Every known node with what we know of it, sorted by id.
    pub fn nodes(&self) -> &[(NodeId, NodeMeta)] {
        &self.nodes
    }

    /// Every link, sorted by `(a, b)`.
    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// The link between `x` and `y`, in either order.
    pub fn link(&self, x: &NodeId, y: &NodeId) -> Option<&Link> {
        let key = if x < y { (x, y) } else { (y, x) };
        self.links
            .binary_search_by(|l| (&l.a, &l.b).cmp(&key))
            .ok()
            .map(|i| &self.links[i])
    }

    /// Adds a link this node measured outside link-state gossip (a radio
    /// station heard on RF): `peer` joins the nodes (with `meta`, unless
    /// already known) and the link joins the links unless one is already
    /// reported, where the worse kind, the mean RTT and the larger loss
    /// win, as for two reports. For display: routing does not read it.
    pub fn add_local(&mut self, peer: NodeId, meta: NodeMeta, report: &LinkReport) {
        if peer == self.me {
            return;
        }
        if let Err(i) = self.nodes.binary_search_by(|(id, _)| id.cmp(&peer)) {
            self.nodes.insert(i, (peer, meta));
        }
        let (kind, rtt_ms, loss) = sanitised(report);
        let (a, b) = if self.me < peer {
            (self.me, peer)
        } else {
            (peer, self.me)
        };
        match self.links.binary_search_by(|l| (&l.a, &l.b).cmp(&(&a, &b))) {
            Ok(i) => {
                let l = &mut self.links[i];
                l.kind = l.kind.merge(kind);
                l.rtt_ms = (l.rtt_ms + rtt_ms) / 2.0;
                l.loss = l.loss.max(loss);
            }
            Err(i) => self.links.insert(
                i,
                Link {
                    a,
                    b,
                    kind,
                    rtt_ms,
                    loss,
                    reported_by: 1,
                },
            ),
        }
    }

    /// The JSON form served by the API:
    ///
    /// ```json
    /// { "me": "<hex>",
    ///   "nodes": [{ "id": "<hex>", "name": "N0CALL-hill" | null, "mode": "online" | null, "self": true }],
    ///   "links": [{ "a": "<hex>", "b": "<hex>", "kind": "lan" | "wan" | "rf",
    ///               "rtt_ms": 3.5, "loss": 0.01, "quality": 0.95 }] }
    /// ```
    ///
    /// Nodes are sorted by id and links by `(a, b)` with `a < b`.
    pub fn to_json(&self) -> serde_json::Value {
        let nodes: Vec<serde_json::Value> = self
            .nodes
            .iter()
            .map(|(id, m)| {
                json!({
                    "id": id.to_hex(),
                    "name": m.name,
                    "mode": m.mode,
                    "self": *id == self.me,
                })
            })
            .collect();
        let links: Vec<serde_json::Value> = self
            .links
            .iter()
            .map(|l| {
                json!({
                    "a": l.a.to_hex(),
                    "b": l.b.to_hex(),
                    "kind": l.kind,
                    "rtt_ms": l.rtt_ms,
                    "loss": l.loss,
                    "quality": l.quality(),
                })
            })
            .collect();
        json!({ "me": self.me.to_hex(), "nodes": nodes, "links": links })
    }

    /// A GraphViz `graph mesh { ... }` for `dot -Tsvg`.
    ///
    /// Nodes are keyed by full hex id and labelled with their name (or the
    /// first 8 hex digits); this node is drawn bold with a double border.
    /// Edges are labelled with RTT and loss, styled by kind: LAN solid, WAN
    /// dashed, radio dotted.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("graph mesh {\n  node [shape=box];\n");
        // `write!` into a String cannot fail; the results are ignored for that reason.
        for (id, m) in &self.nodes {
            let label = match m.name.as_deref() {
                Some(name) if !name.is_empty() => dot_escape(name),
                _ => id.short(),
            };
            let extra = if *id == self.me {
                ", style=bold, peripheries=2"
            } else {
                ""
            };
            let _ = writeln!(out, "  \"{}\" [label=\"{label}\"{extra}];", id.to_hex());
        }
        for l in &self.links {
            let _ = writeln!(
                out,
                "  \"{}\" -- \"{}\" [label=\"{:.1} ms, {:.0}% loss\", style={}];",
                l.a.to_hex(),
                l.b.to_hex(),
                l.rtt_ms,
                l.loss * 100.0,
                l.kind.dot_style(),
            );
        }
        out.push_str("}\n");
        out
    }
}

/// Makes free text safe inside a DOT double-quoted string.
///
/// `"` and `\` are backslash-escaped (a lone `\` would otherwise start a DOT
/// escape such as `\N`); control characters, including newlines, become spaces.
fn dot_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId([n; 32])
    }

    fn report(peer: NodeId, kind: LinkKind, rtt_ms: f64, loss: f64) -> LinkReport {
        LinkReport {
            peer,
            kind,
            rtt_ms,
            loss,
        }
    }

    #[test]
    fn two_directions_merge_into_one_link() {
        let reports = HashMap::from([
            (id(1), vec![report(id(2), LinkKind::Lan, 10.0, 0.1)]),
            (id(2), vec![report(id(1), LinkKind::Lan, 20.0, 0.3)]),
        ]);
        let topo = Topology::new(id(1), &HashMap::new(), &reports);
        assert_eq!(topo.links().len(), 1);
        let l = topo.links()[0];
        assert_eq!((l.a, l.b), (id(1), id(2)));
        assert_eq!(l.kind, LinkKind::Lan);
        assert_eq!(l.rtt_ms, 15.0, "mean of the two RTTs");
        assert_eq!(l.loss, 0.3, "the worse loss");
        assert_eq!(l.reported_by, 2);
        assert_eq!(
            topo.link(&id(2), &id(1)),
            Some(&l),
            "lookup in either order"
        );
    }

    #[test]
    fn one_sided_report_is_a_link() {
        let reports = HashMap::from([(id(5), vec![report(id(3), LinkKind::Wan, 40.0, 0.0)])]);
        let topo = Topology::new(id(9), &HashMap::new(), &reports);
        let l = topo.link(&id(3), &id(5)).expect("one-sided link kept");
        assert_eq!((l.a, l.b), (id(3), id(5)), "a < b whoever reported");
        assert_eq!(l.reported_by, 1);
        assert_eq!(l.kind, LinkKind::Wan);
        // me, the reporter and the reported peer are all nodes.
        let ids: Vec<NodeId> = topo.nodes().iter().map(|(n, _)| *n).collect();
        assert_eq!(ids, vec![id(3), id(5), id(9)]);
    }

    #[test]
    fn the_worse_kind_wins() {
        use LinkKind::*;
        for (x, y, want) in [
            (Lan, Lan, Lan),
            (Lan, Wan, Wan),
            (Wan, Lan, Wan),
            (Lan, Rf, Rf),
            (Rf, Wan, Rf),
            (Wan, Wan, Wan),
        ] {
            let reports = HashMap::from([
                (id(1), vec![report(id(2), x, 1.0, 0.0)]),
                (id(2), vec![report(id(1), y, 1.0, 0.0)]),
            ]);
            let topo = Topology::new(id(1), &HashMap::new(), &reports);
            assert_eq!(topo.links()[0].kind, want, "{x:?} + {y:?}");
        }
    }

    #[test]
    fn a_radio_link_added_locally_joins_the_graph() {
        let mut t = Topology::new(id(1), &HashMap::new(), &HashMap::new());
        let station = NodeMeta {
            name: Some("N2BRV-bravo".into()),
            mode: None,
        };
        t.add_local(
            id(5),
            station.clone(),
            &report(id(5), LinkKind::Rf, 2500.0, 0.2),
        );
        t.add_local(
            id(1),
            NodeMeta::default(),
            &report(id(1), LinkKind::Rf, 1.0, 0.0),
        );
        assert_eq!(t.nodes().len(), 2, "self is not added again");
        assert_eq!(t.nodes()[1], (id(5), station));
        let l = t.link(&id(5), &id(1)).unwrap();
        assert_eq!((l.kind, l.rtt_ms, l.loss), (LinkKind::Rf, 2500.0, 0.2));
        let j = t.to_json();
        assert_eq!(j["links"][0]["kind"], "rf");
    }

    #[test]
    fn garbage_numbers_are_clamped_and_self_links_dropped() {
        let reports = HashMap::from([(
            id(1),
            vec![
                report(id(2), LinkKind::Lan, f64::NAN, f64::NAN),
                report(id(3), LinkKind::Lan, -5.0, 7.0),
                report(id(1), LinkKind::Lan, 1.0, 0.0),
            ],
        )]);
        let topo = Topology::new(id(1), &HashMap::new(), &reports);
        assert_eq!(topo.links().len(), 2, "the self-link is dropped");
        let l12 = topo.link(&id(1), &id(2)).expect("link 1-2");
        assert_eq!((l12.rtt_ms, l12.loss), (RTT_MAX_MS, 1.0));
        let l13 = topo.link(&id(1), &id(3)).expect("link 1-3");
        assert_eq!((l13.rtt_ms, l13.loss), (0.0, 1.0));
    }

    #[test]
    fn json_shape_and_order() {
        let meta = HashMap::from([(
            id(2),
            NodeMeta {
                name: Some("N0CALL-hill".into()),
                mode: Some("online".into()),
            },
        )]);
        // Inserted out of order on purpose.
        let reports = HashMap::from([
            (id(3), vec![report(id(1), LinkKind::Rf, 100.0, 0.5)]),
            (id(1), vec![report(id(2), LinkKind::Lan, 0.0, 0.0)]),
        ]);
        let topo = Topology::new(id(1), &meta, &reports);
        let v = topo.to_json();
        assert_eq!(v["me"], id(1).to_hex());
        let nodes = v["nodes"].as_array().expect("nodes array");
        let ids: Vec<&str> = nodes.iter().filter_map(|n| n["id"].as_str()).collect();
        assert_eq!(ids, [id(1).to_hex(), id(2).to_hex(), id(3).to_hex()]);
        assert_eq!(nodes[0]["self"], true);
        assert_eq!(nodes[1]["self"], false);
        assert_eq!(nodes[1]["name"], "N0CALL-hill");
        assert_eq!(nodes[1]["mode"], "online");
        assert!(nodes[2]["name"].is_null());
        let links = v["links"].as_array().expect("links array");
        assert_eq!(links.len(), 2);
        assert_eq!(links[0]["a"], id(1).to_hex());
        assert_eq!(links[0]["b"], id(2).to_hex());
        assert_eq!(links[0]["kind"], "lan");
        assert_eq!(links[0]["quality"], 1.0);
        assert_eq!(links[1]["b"], id(3).to_hex());
        assert_eq!(links[1]["kind"], "rf");
        assert_eq!(links[1]["rtt_ms"], 100.0);
        assert_eq!(links[1]["loss"], 0.5);
        assert_eq!(links[1]["quality"], 0.25, "(1 - 0.5) / (1 + 100/100)");
    }

    #[test]
    fn dot_escapes_names_and_styles_edges() {
        let meta = HashMap::from([(
            id(2),
            NodeMeta {
                name: Some("evil\" ] ; x [label=\"\\N\nnext".into()),
                mode: None,
            },
        )]);
        let reports = HashMap::from([(
            id(1),
            vec![
                report(id(2), LinkKind::Wan, 12.34, 0.05),
                report(id(3), LinkKind::Rf, 900.0, 0.2),
                report(id(4), LinkKind::Lan, 1.0, 0.0),
            ],
        )]);
        let dot = Topology::new(id(1), &meta, &reports).to_dot();
        assert!(dot.starts_with("graph mesh {\n"));
        assert!(dot.ends_with("}\n"));
        assert!(
            dot.contains(r#"[label="evil\" ] ; x [label=\"\\N next"];"#),
            "{dot}"
        );
        // Unnamed nodes get the short id; self is drawn distinctly.
        assert!(dot.contains(&format!(
            "\"{}\" [label=\"{}\", style=bold, peripheries=2];",
            id(1).to_hex(),
            id(1).short()
        )));
        assert!(dot.contains(&format!(
            "\"{}\" [label=\"{}\"];",
            id(3).to_hex(),
            id(3).short()
        )));
        assert!(
            dot.contains("[label=\"12.3 ms, 5% loss\", style=dashed]"),
            "{dot}"
        );
        assert!(dot.contains("[label=\"900.0 ms, 20% loss\", style=dotted]"));
        assert!(dot.contains("[label=\"1.0 ms, 0% loss\", style=solid]"));
        // Every quote outside an escape is balanced: one line per statement.
        for line in dot.lines().filter(|l| l.contains('"')) {
            let unescaped = line.replace("\\\\", "").replace("\\\"", "");
            assert_eq!(unescaped.matches('"').count() % 2, 0, "{line}");
        }
    }
}

//! CloudFront edge locations (`data/geo/edge-locations.csv`, embedded): where the edge that
//! served a request is, from the three letters that start `x-edge-location` (e.g. `IAD` in
//! `IAD89-C1`). Prefixes AWS adds later are simply unknown.

use std::sync::LazyLock;

const EDGE_CSV: &str = include_str!("../data/geo/edge-locations.csv");

#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub code: String,
    pub city: String,
    pub country_code: String,
    pub latitude: f64,
    pub longitude: f64,
}

pub static EDGES: LazyLock<Vec<Edge>> = LazyLock::new(|| parse_edges(EDGE_CSV));

fn parse_edges(csv: &str) -> Vec<Edge> {
    let mut edges = Vec::new();
    for line in csv.lines().skip(1) {
        // code,city,country,country_code,latitude,longitude,"pricing region, with commas"
        let fields: Vec<&str> = line.splitn(7, ',').collect();
        let [code, city, _country, cc, lat, lon, _rest] = fields[..] else { continue };
        let (Ok(latitude), Ok(longitude)) = (lat.parse(), lon.parse()) else { continue };
        edges.push(Edge { code: code.to_string(), city: city.to_string(), country_code: cc.to_string(), latitude, longitude });
    }
    edges
}

pub fn edge(code: &str) -> Option<&'static Edge> {
    EDGES.iter().find(|e| e.code == code)
}

/// Great-circle distance in kilometres.
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, lo1, la2, lo2) = (a.0.to_radians(), a.1.to_radians(), b.0.to_radians(), b.1.to_radians());
    let h = ((la2 - la1) / 2.0).sin().powi(2) + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_edges_parse_with_coordinates() {
        assert!(EDGES.len() > 100);
        let iad = edge("IAD").expect("IAD is an edge");
        assert_eq!(iad.country_code, "US");
        assert!(edge("ZZZ").is_none());
    }

    #[test]
    fn distance_between_frankfurt_and_new_york_is_about_6200_km() {
        let (fra, jfk) = (edge("FRA").unwrap(), edge("JFK").unwrap());
        let d = distance_km((fra.latitude, fra.longitude), (jfk.latitude, jfk.longitude));
        assert!((6100.0..6300.0).contains(&d), "{d}");
    }
}

//! The query language subset: equality and `$eq $ne $gt $gte $lt $lte $in $nin $exists` on
//! (dotted) fields, `$and`/`$or`, one- or many-field `sort`, top-level projection. Comparison
//! follows BSON's cross-type order
//! (<https://www.mongodb.com/docs/manual/reference/bson-type-comparison-order/>).

use std::cmp::Ordering;

use bson::{Bson, Document};

use crate::error::{CmdError, CmdResult};

fn type_rank(v: &Bson) -> u8 {
    match v {
        Bson::MinKey => 0,
        Bson::Undefined | Bson::Null => 1,
        Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => 2,
        Bson::String(_) | Bson::Symbol(_) => 3,
        Bson::Document(_) => 4,
        Bson::Array(_) => 5,
        Bson::Binary(_) => 6,
        Bson::ObjectId(_) => 7,
        Bson::Boolean(_) => 8,
        Bson::DateTime(_) => 9,
        Bson::Timestamp(_) => 10,
        Bson::RegularExpression(_) => 11,
        Bson::MaxKey => 13,
        _ => 12,
    }
}

pub fn as_f64(v: &Bson) -> Option<f64> {
    match v {
        Bson::Int32(i) => Some(f64::from(*i)),
        Bson::Int64(i) => Some(*i as f64),
        Bson::Double(d) => Some(*d),
        _ => None,
    }
}

pub fn as_i64(v: &Bson) -> Option<i64> {
    match v {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        Bson::Double(d) => Some(*d as i64),
        Bson::Boolean(b) => Some(i64::from(*b)),
        _ => None,
    }
}

pub fn compare(a: &Bson, b: &Bson) -> Ordering {
    let (ra, rb) = (type_rank(a), type_rank(b));
    if ra != rb {
        return ra.cmp(&rb);
    }
    match (a, b) {
        (Bson::String(x), Bson::String(y)) => x.cmp(y),
        (Bson::ObjectId(x), Bson::ObjectId(y)) => x.bytes().cmp(&y.bytes()),
        (Bson::Boolean(x), Bson::Boolean(y)) => x.cmp(y),
        (Bson::DateTime(x), Bson::DateTime(y)) => x.cmp(y),
        (Bson::Timestamp(x), Bson::Timestamp(y)) => x.cmp(y),
        (Bson::Binary(x), Bson::Binary(y)) => x.bytes.cmp(&y.bytes),
        (Bson::Document(x), Bson::Document(y)) => {
            for ((kx, vx), (ky, vy)) in x.iter().zip(y.iter()) {
                let o = kx.cmp(ky).then_with(|| compare(vx, vy));
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        (Bson::Array(x), Bson::Array(y)) => {
            for (vx, vy) in x.iter().zip(y.iter()) {
                let o = compare(vx, vy);
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        _ => match (as_f64(a), as_f64(b)) {
            (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
            _ => Ordering::Equal,
        },
    }
}

pub fn get_path<'a>(doc: &'a Document, path: &str) -> Option<&'a Bson> {
    let mut parts = path.split('.');
    let mut cur = doc.get(parts.next()?)?;
    for p in parts {
        cur = match cur {
            Bson::Document(d) => d.get(p)?,
            Bson::Array(a) => a.get(p.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Mongo's rule: a condition on an array field holds if it holds for the array or any element.
fn any_value(v: Option<&Bson>, pred: &dyn Fn(&Bson) -> bool) -> bool {
    match v {
        Some(Bson::Array(items)) => pred(&Bson::Array(items.clone())) || items.iter().any(pred),
        Some(x) => pred(x),
        None => pred(&Bson::Null),
    }
}

fn eq(a: &Bson, b: &Bson) -> bool {
    compare(a, b) == Ordering::Equal
}

fn is_operator_doc(v: &Bson) -> bool {
    matches!(v, Bson::Document(d) if d.keys().next().is_some_and(|k| k.starts_with('$')))
}

pub fn matches(doc: &Document, filter: &Document) -> CmdResult<bool> {
    for (key, cond) in filter {
        let ok = match key.as_str() {
            "$and" | "$or" | "$nor" => {
                let Bson::Array(subs) = cond else {
                    return Err(CmdError::BadValue(format!("{key} must be an array")));
                };
                let mut results = Vec::new();
                for s in subs {
                    let Bson::Document(s) = s else {
                        return Err(CmdError::BadValue(format!("{key} entries must be objects")));
                    };
                    results.push(matches(doc, s)?);
                }
                match key.as_str() {
                    "$and" => results.iter().all(|r| *r),
                    "$or" => results.iter().any(|r| *r),
                    _ => !results.iter().any(|r| *r),
                }
            }
            k if k.starts_with('$') => return Err(CmdError::BadValue(format!("unknown top level operator: {k}"))),
            path => field_matches(get_path(doc, path), cond)?,
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn field_matches(value: Option<&Bson>, cond: &Bson) -> CmdResult<bool> {
    if !is_operator_doc(cond) {
        return Ok(any_value(value, &|v| eq(v, cond)));
    }
    let Bson::Document(ops) = cond else { return Ok(false) };
    for (op, arg) in ops {
        let ok = match op.as_str() {
            "$eq" => any_value(value, &|v| eq(v, arg)),
            "$ne" => !any_value(value, &|v| eq(v, arg)),
            "$gt" => value.is_some() && any_value(value, &|v| same_kind(v, arg) && compare(v, arg).is_gt()),
            "$gte" => value.is_some() && any_value(value, &|v| same_kind(v, arg) && compare(v, arg).is_ge()),
            "$lt" => value.is_some() && any_value(value, &|v| same_kind(v, arg) && compare(v, arg).is_lt()),
            "$lte" => value.is_some() && any_value(value, &|v| same_kind(v, arg) && compare(v, arg).is_le()),
            "$in" | "$nin" => {
                let Bson::Array(set) = arg else {
                    return Err(CmdError::BadValue(format!("{op} needs an array")));
                };
                let hit = any_value(value, &|v| set.iter().any(|s| eq(v, s)));
                if op == "$in" {
                    hit
                } else {
                    !hit
                }
            }
            "$exists" => value.is_some() == arg.as_bool().unwrap_or_else(|| as_i64(arg) != Some(0)),
            other => return Err(CmdError::BadValue(format!("unknown operator: {other}"))),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Range operators only compare within one BSON type bracket, as mongod does.
fn same_kind(a: &Bson, b: &Bson) -> bool {
    type_rank(a) == type_rank(b)
}

pub fn sort_docs(docs: &mut [Document], sort: &Document) {
    if sort.is_empty() {
        return;
    }
    docs.sort_by(|a, b| {
        for (field, dir) in sort {
            let null = Bson::Null;
            let va = get_path(a, field).unwrap_or(&null);
            let vb = get_path(b, field).unwrap_or(&null);
            let mut o = compare(va, vb);
            if as_i64(dir).unwrap_or(1) < 0 {
                o = o.reverse();
            }
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    });
}

/// Top-level inclusion or exclusion projection; `_id` is kept unless excluded.
pub fn project(doc: &Document, projection: &Document) -> Document {
    if projection.is_empty() {
        return doc.clone();
    }
    let truthy = |v: &Bson| v.as_bool().unwrap_or_else(|| as_i64(v) != Some(0));
    let inclusive = projection.iter().any(|(k, v)| k != "_id" && truthy(v));
    let mut out = Document::new();
    for (k, v) in doc {
        let keep = match projection.get(k) {
            Some(p) => truthy(p),
            None => !inclusive || k == "_id",
        };
        if keep {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn operators() -> CmdResult<()> {
        let d = doc! {"a": 5, "b": "x", "c": [1, 2]};
        assert!(matches(&d, &doc! {"a": {"$gt": 4, "$lte": 5}})?);
        assert!(!matches(&d, &doc! {"a": {"$gt": "4"}})?);
        assert!(matches(&d, &doc! {"b": {"$in": ["y", "x"]}, "c": 2})?);
        assert!(matches(&d, &doc! {"$or": [{"a": 1}, {"b": "x"}]})?);
        assert!(matches(&d, &doc! {"z": {"$exists": false}})?);
        Ok(())
    }
}

//! Turns what a user typed into a tantivy query, without tantivy's query grammar.
//!
//! Search text is hostile input (unbalanced quotes, `field:` syntax, megabytes of text, NUL bytes), so it is
//! never handed to a query parser: it is split on whitespace, an optional `artist:`/`album:`/`title:`/
//! `year:`/`path:` prefix picks the field of a word, and the rest goes through the same analyzer the index
//! used. Every word must match (in any of the fields, or in the one it names); nothing else is syntax.
//! Too long a query is a clear error ([`SearchError::QueryTooLong`], [`SearchError::TooManyTerms`]), not a
//! slow search.

use crate::{Fields, SearchError};
use tantivy::Term;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::tokenizer::{TextAnalyzer, TokenStream};

/// Longest query accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 1024;
/// Most words a query may hold after analysis.
pub const MAX_QUERY_TERMS: usize = 32;

/// The fields a bare word is looked up in, with their weight: tags count more than the path.
fn all_fields(f: &Fields) -> [(Field, f32); 5] {
    [(f.title, 2.0), (f.artist, 2.0), (f.album, 1.5), (f.year, 1.0), (f.path, 0.5)]
}

fn named_field(f: &Fields, name: &str) -> Option<Field> {
    match name.to_ascii_lowercase().as_str() {
        "artist" => Some(f.artist),
        "album" => Some(f.album),
        "title" => Some(f.title),
        "year" => Some(f.year),
        "path" | "file" => Some(f.path),
        _ => None,
    }
}

/// Builds the query, or `None` when the text holds no searchable word (then nothing matches).
pub(crate) fn build(
    text: &str,
    fields: &Fields,
    analyzer: &mut TextAnalyzer,
) -> Result<Option<Box<dyn Query>>, SearchError> {
    if text.len() > MAX_QUERY_BYTES {
        return Err(SearchError::QueryTooLong { len: text.len() });
    }
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    for word in text.split_whitespace() {
        // `artist:foo` searches one field; an unknown prefix (`foo:bar`) is just two words.
        let named = word.split_once(':').and_then(|(name, rest)| named_field(fields, name).map(|f| (f, rest)));
        let (targets, rest) = match named {
            Some((field, rest)) => (vec![(field, 1.0)], rest),
            None => (all_fields(fields).to_vec(), word),
        };
        let mut stream = analyzer.token_stream(rest);
        while stream.advance() {
            let token = &stream.token().text;
            let alternatives: Vec<(Occur, Box<dyn Query>)> = targets
                .iter()
                .map(|&(field, boost)| {
                    let term = TermQuery::new(Term::from_field_text(field, token), IndexRecordOption::WithFreqs);
                    (Occur::Should, Box::new(BoostQuery::new(Box::new(term), boost)) as Box<dyn Query>)
                })
                .collect();
            clauses.push((Occur::Must, Box::new(BooleanQuery::new(alternatives))));
            if clauses.len() > MAX_QUERY_TERMS {
                return Err(SearchError::TooManyTerms);
            }
        }
    }
    if clauses.is_empty() {
        return Ok(None);
    }
    Ok(Some(Box::new(BooleanQuery::new(clauses))))
}

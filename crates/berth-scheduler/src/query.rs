//! The cluster query language of `memberOf` placement constraints (a subset
//! of Amazon ECS's).
//!
//! ```text
//! expression := or
//! or         := and (("or" | "||") and)*
//! and        := unary (("and" | "&&") unary)*
//! unary      := ("not" | "!") unary | "(" expression ")" | predicate
//! predicate  := subject operator [argument]
//! ```
//!
//! Subjects: `attribute:<name>`, `ec2InstanceId`, `agentConnected`,
//! `agentVersion`, `runningTasksCount`, `registeredAt`, `task:group`.
//!
//! Operators: `==`/`equals`, `!=`/`not_equals`, `exists`,
//! `!exists`/`not_exists`, `in`, `!in`/`not_in` (with `[a, b]` or `(a, b)`),
//! `=~`/`matches`, `!~`/`not_matches` (regular expressions, matched against the
//! whole value), and `>`, `>=`, `<`, `<=` (numeric attributes,
//! `runningTasksCount`, `registeredAt` as epoch seconds or `YYYY-MM-DD[THH:MM[:SS]][Z]`,
//! and `agentVersion` compared as a dotted version).
//!
//! Values are bare tokens (letters, digits, `.`, `-`, `_`, `:`, `/`, `*`) or
//! single/double quoted strings; `*` is a wildcard for `==`, `!=` and `in`.
//! `task:group` holds if *any* task on the instance satisfies the test, so
//! `task:group != service:web` means "runs no task of service:web".

use std::cmp::Ordering;
use std::fmt;

use regex::{Regex, RegexBuilder};

use crate::{InstanceSnapshot, PlacementError};

/// Upper bound for compiled user regexes, so a hostile expression cannot make
/// the scheduler allocate without limit.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A parsed cluster query expression, ready to evaluate against instances.
#[derive(Debug, Clone)]
pub struct Expression {
    source: String,
    root: Node,
}

impl Expression {
    /// Parses `source`; syntax errors become
    /// [`PlacementError::InvalidConstraint`] naming the position (0-based
    /// character offset) and what was expected.
    pub fn parse(source: &str) -> Result<Self, PlacementError> {
        let root = lex(source)
            .and_then(|tokens| Parser { tokens, next: 0 }.parse_all())
            .map_err(|error| {
                PlacementError::InvalidConstraint(format!(
                    "Invalid memberOf expression {source:?}: {} (at position {}).",
                    error.message, error.position
                ))
            })?;
        Ok(Self {
            source: source.to_string(),
            root,
        })
    }

    /// The expression text as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the expression for an instance as described by its snapshot.
    pub fn matches(&self, instance: &InstanceSnapshot) -> bool {
        self.matches_facts(&InstanceFacts {
            snapshot: instance,
            planned_tasks: 0,
            planned_group: "",
        })
    }

    pub(crate) fn matches_facts(&self, facts: &InstanceFacts<'_>) -> bool {
        self.root.eval(facts)
    }
}

/// An instance as seen mid-plan: its snapshot plus the tasks placed on it
/// earlier in the same plan (all of the request's group).
pub(crate) struct InstanceFacts<'a> {
    pub snapshot: &'a InstanceSnapshot,
    pub planned_tasks: usize,
    pub planned_group: &'a str,
}

impl InstanceFacts<'_> {
    fn task_groups(&self) -> impl Iterator<Item = &str> {
        let planned = (self.planned_tasks > 0).then_some(self.planned_group);
        self.snapshot
            .task_groups
            .keys()
            .map(String::as_str)
            .chain(planned)
    }

    fn running_tasks_count(&self) -> usize {
        self.snapshot.task_count() + self.planned_tasks
    }
}

#[derive(Debug, Clone)]
enum Node {
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Predicate(Predicate),
}

impl Node {
    fn eval(&self, facts: &InstanceFacts<'_>) -> bool {
        match self {
            Self::And(left, right) => left.eval(facts) && right.eval(facts),
            Self::Or(left, right) => left.eval(facts) || right.eval(facts),
            Self::Not(inner) => !inner.eval(facts),
            Self::Predicate(predicate) => predicate.eval(facts),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Subject {
    Attribute(String),
    Ec2InstanceId,
    AgentConnected,
    AgentVersion,
    RunningTasksCount,
    RegisteredAt,
    TaskGroup,
}

impl Subject {
    fn parse(word: &str) -> Option<Self> {
        if let Some(name) = strip_prefix_ignore_case(word, "attribute:") {
            return (!name.is_empty()).then(|| Self::Attribute(name.to_string()));
        }
        let subject = match word.to_ascii_lowercase().as_str() {
            "ec2instanceid" => Self::Ec2InstanceId,
            "agentconnected" => Self::AgentConnected,
            "agentversion" => Self::AgentVersion,
            "runningtaskscount" => Self::RunningTasksCount,
            "registeredat" => Self::RegisteredAt,
            "task:group" => Self::TaskGroup,
            _ => return None,
        };
        Some(subject)
    }

    fn is_numeric(&self) -> bool {
        matches!(self, Self::RunningTasksCount | Self::RegisteredAt)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Equals,
    NotEquals,
    Exists,
    NotExists,
    In,
    NotIn,
    Matches,
    NotMatches,
    Compare(Comparison),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparison {
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
}

impl Comparison {
    fn holds(self, ordering: Option<Ordering>) -> bool {
        match (self, ordering) {
            (_, None) => false,
            (Self::Greater, Some(ordering)) => ordering == Ordering::Greater,
            (Self::GreaterOrEqual, Some(ordering)) => ordering != Ordering::Less,
            (Self::Less, Some(ordering)) => ordering == Ordering::Less,
            (Self::LessOrEqual, Some(ordering)) => ordering != Ordering::Greater,
        }
    }
}

#[derive(Debug, Clone)]
struct Predicate {
    subject: Subject,
    test: Test,
    /// Set for the `!=`, `!exists`, `!in` and `!~` forms: the predicate is the
    /// negation of the positive test, so e.g. `!=` holds for a missing attribute.
    negated: bool,
}

impl Predicate {
    fn eval(&self, facts: &InstanceFacts<'_>) -> bool {
        let instance = facts.snapshot;
        let holds = match &self.subject {
            Subject::Attribute(name) => instance
                .attributes
                .get(name)
                .is_some_and(|value| self.test.holds_for_text(value)),
            Subject::Ec2InstanceId => self.test.holds_for_text(&instance.instance_id),
            Subject::AgentConnected => self.test.holds_for_text(if instance.agent_connected {
                "true"
            } else {
                "false"
            }),
            Subject::AgentVersion => self.test.holds_for_text(&instance.agent_version),
            Subject::RunningTasksCount => self
                .test
                .holds_for_number(facts.running_tasks_count() as f64),
            Subject::RegisteredAt => self.test.holds_for_number(instance.registered_at),
            Subject::TaskGroup => facts
                .task_groups()
                .any(|group| self.test.holds_for_text(group)),
        };
        holds != self.negated
    }
}

#[derive(Debug, Clone)]
enum Test {
    Exists,
    /// `==` (one pattern) and `in` on text subjects.
    OneOf(Vec<Pattern>),
    /// `==` (one value) and `in` on numeric subjects.
    NumberOneOf(Vec<f64>),
    Matches(Regex),
    Compare(Comparison, Threshold),
}

#[derive(Debug, Clone)]
enum Threshold {
    Number(f64),
    Version(Vec<u64>),
}

impl Test {
    fn holds_for_text(&self, value: &str) -> bool {
        match self {
            Self::Exists => true,
            Self::OneOf(patterns) => patterns.iter().any(|pattern| pattern.matches(value)),
            Self::NumberOneOf(numbers) => {
                parse_number(value).is_some_and(|value| numbers.contains(&value))
            }
            Self::Matches(regex) => regex.is_match(value),
            Self::Compare(comparison, Threshold::Number(threshold)) => parse_number(value)
                .is_some_and(|value| comparison.holds(value.partial_cmp(threshold))),
            Self::Compare(comparison, Threshold::Version(threshold)) => parse_version(value)
                .is_some_and(|value| comparison.holds(Some(compare_versions(&value, threshold)))),
        }
    }

    fn holds_for_number(&self, value: f64) -> bool {
        match self {
            Self::Exists => true,
            Self::NumberOneOf(numbers) => numbers.contains(&value),
            Self::Compare(comparison, Threshold::Number(threshold)) => {
                comparison.holds(value.partial_cmp(threshold))
            }
            // The parser only builds the tests above for numeric subjects.
            Self::OneOf(_) | Self::Matches(_) | Self::Compare(_, Threshold::Version(_)) => false,
        }
    }
}

/// A literal value where `*` matches any run of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    text: String,
    has_wildcard: bool,
}

impl Pattern {
    fn new(text: String) -> Self {
        let has_wildcard = text.contains('*');
        Self { text, has_wildcard }
    }

    fn matches(&self, value: &str) -> bool {
        if self.has_wildcard {
            glob_match(&self.text, value)
        } else {
            self.text == value
        }
    }
}

fn glob_match(pattern: &str, value: &str) -> bool {
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or_default();
    let Some(mut rest) = value.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        return rest.is_empty();
    };
    // Leftmost matching of the middle pieces is optimal for `*`-only globs.
    for piece in middle {
        match rest.find(piece) {
            Some(start) => rest = &rest[start + piece.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

fn parse_number(text: &str) -> Option<f64> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|number| number.is_finite())
}

/// Parses `1.2.3`, `v1.2`, `1.20.0-beta` (pre-release suffixes are ignored).
fn parse_version(text: &str) -> Option<Vec<u64>> {
    let text = text.trim();
    let text = text
        .strip_prefix('v')
        .or_else(|| text.strip_prefix('V'))
        .unwrap_or(text);
    text.split('.')
        .map(|component| {
            let digits_end = component
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(component.len());
            component[..digits_end].parse::<u64>().ok()
        })
        .collect()
}

/// Compares dotted versions, treating missing components as 0 (`1.2` == `1.2.0`).
fn compare_versions(left: &[u64], right: &[u64]) -> Ordering {
    let length = left.len().max(right.len());
    (0..length)
        .map(|index| {
            let left = left.get(index).copied().unwrap_or(0);
            let right = right.get(index).copied().unwrap_or(0);
            left.cmp(&right)
        })
        .find(|ordering| ordering.is_ne())
        .unwrap_or(Ordering::Equal)
}

/// Epoch seconds, or a UTC date `YYYY-MM-DD` with optional `THH:MM[:SS]` and `Z`.
fn parse_timestamp(text: &str) -> Option<f64> {
    if let Some(number) = parse_number(text) {
        return Some(number);
    }
    let (date, time) = match text.split_once(['T', 't']) {
        Some((date, time)) => (date, Some(time)),
        None => (text, None),
    };
    let mut date_parts = date.split('-').map(|part| part.parse::<i64>().ok());
    let (Some(Some(year)), Some(Some(month)), Some(Some(day)), None) = (
        date_parts.next(),
        date_parts.next(),
        date_parts.next(),
        date_parts.next(),
    ) else {
        return None;
    };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let mut seconds_of_day = 0;
    if let Some(time) = time {
        let time = time.strip_suffix(['Z', 'z']).unwrap_or(time);
        let parts: Option<Vec<i64>> = time.split(':').map(|part| part.parse().ok()).collect();
        let (hour, minute, second) = match parts?.as_slice() {
            [hour, minute] => (*hour, *minute, 0),
            [hour, minute, second] => (*hour, *minute, *second),
            _ => return None,
        };
        if !(0..24).contains(&hour) || !(0..60).contains(&minute) || !(0..61).contains(&second) {
            return None;
        }
        seconds_of_day = hour * 3600 + minute * 60 + second;
    }
    Some((days_from_civil(year, month, day) * 86_400 + seconds_of_day) as f64)
}

/// Days since 1970-01-01 in the proleptic Gregorian calendar (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

// ---------------------------------------------------------------------------
// Lexer

#[derive(Debug)]
struct SyntaxError {
    position: usize,
    message: String,
}

impl SyntaxError {
    fn new(position: usize, message: impl Into<String>) -> Self {
        Self {
            position,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum TokenKind {
    LeftParen,
    RightParen,
    LeftBracket,
    RightBracket,
    Comma,
    AndAnd,
    OrOr,
    Bang,
    EqualEqual,
    BangEqual,
    EqualTilde,
    BangTilde,
    Greater,
    GreaterEqual,
    Less,
    LessEqual,
    Word(String),
    Quoted(String),
    End,
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let symbol = match self {
            Self::LeftParen => "(",
            Self::RightParen => ")",
            Self::LeftBracket => "[",
            Self::RightBracket => "]",
            Self::Comma => ",",
            Self::AndAnd => "&&",
            Self::OrOr => "||",
            Self::Bang => "!",
            Self::EqualEqual => "==",
            Self::BangEqual => "!=",
            Self::EqualTilde => "=~",
            Self::BangTilde => "!~",
            Self::Greater => ">",
            Self::GreaterEqual => ">=",
            Self::Less => "<",
            Self::LessEqual => "<=",
            Self::Word(word) => return write!(f, "'{word}'"),
            Self::Quoted(text) => return write!(f, "{text:?}"),
            Self::End => return f.write_str("end of expression"),
        };
        write!(f, "'{symbol}'")
    }
}

#[derive(Debug, Clone)]
struct Token {
    kind: TokenKind,
    position: usize,
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '/' | '*')
}

fn lex(source: &str) -> Result<Vec<Token>, SyntaxError> {
    let chars: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let mut index = 0;
    while index < chars.len() {
        let start = index;
        let current = chars[index];
        let next = chars.get(index + 1).copied();
        let (kind, length) = match (current, next) {
            (c, _) if c.is_whitespace() => {
                index += 1;
                continue;
            }
            ('(', _) => (TokenKind::LeftParen, 1),
            (')', _) => (TokenKind::RightParen, 1),
            ('[', _) => (TokenKind::LeftBracket, 1),
            (']', _) => (TokenKind::RightBracket, 1),
            (',', _) => (TokenKind::Comma, 1),
            ('&', Some('&')) => (TokenKind::AndAnd, 2),
            ('|', Some('|')) => (TokenKind::OrOr, 2),
            ('!', Some('=')) => (TokenKind::BangEqual, 2),
            ('!', Some('~')) => (TokenKind::BangTilde, 2),
            ('!', _) => (TokenKind::Bang, 1),
            ('=', Some('=')) => (TokenKind::EqualEqual, 2),
            ('=', Some('~')) => (TokenKind::EqualTilde, 2),
            ('>', Some('=')) => (TokenKind::GreaterEqual, 2),
            ('>', _) => (TokenKind::Greater, 1),
            ('<', Some('=')) => (TokenKind::LessEqual, 2),
            ('<', _) => (TokenKind::Less, 1),
            ('=', _) => {
                return Err(SyntaxError::new(
                    start,
                    "unexpected '='; expected '==' for equality or '=~' for a regex match",
                ))
            }
            ('&', _) | ('|', _) => {
                return Err(SyntaxError::new(
                    start,
                    format!("unexpected '{current}'; expected '&&' or '||'"),
                ))
            }
            ('"' | '\'', _) => {
                let (text, length) = lex_quoted(&chars, start)?;
                (TokenKind::Quoted(text), length)
            }
            (c, _) if is_word_char(c) => {
                let length = chars[start..]
                    .iter()
                    .take_while(|c| is_word_char(**c))
                    .count();
                let word = chars[start..start + length].iter().collect();
                (TokenKind::Word(word), length)
            }
            (c, _) => {
                return Err(SyntaxError::new(
                    start,
                    format!("unexpected character {c:?}; quote values that contain it"),
                ))
            }
        };
        tokens.push(Token {
            kind,
            position: start,
        });
        index += length;
    }
    tokens.push(Token {
        kind: TokenKind::End,
        position: chars.len(),
    });
    Ok(tokens)
}

/// Reads a quoted string starting at `start`; `\'`, `\"` and `\\` are
/// escapes. Returns the unescaped text and the token's length in chars.
fn lex_quoted(chars: &[char], start: usize) -> Result<(String, usize), SyntaxError> {
    let quote = chars[start];
    let mut text = String::new();
    let mut index = start + 1;
    while let Some(&c) = chars.get(index) {
        match c {
            // Only the quote and the backslash itself are escapable, so regex
            // escapes such as `\.` survive quoting unchanged.
            '\\' if matches!(chars.get(index + 1), Some(&next) if next == quote || next == '\\') => {
                text.push(chars[index + 1]);
                index += 2;
            }
            c if c == quote => return Ok((text, index + 1 - start)),
            c => {
                text.push(c);
                index += 1;
            }
        }
    }
    Err(SyntaxError::new(
        start,
        format!("unterminated string; expected a closing {quote}"),
    ))
}

// ---------------------------------------------------------------------------
// Parser

const SUBJECTS_HINT: &str = "attribute:<name>, ec2InstanceId, agentConnected, agentVersion, \
     runningTasksCount, registeredAt or task:group";
const OPERATORS_HINT: &str = "==, !=, exists, !exists, in, not_in, =~, !~, >, >=, < or <=";

struct Parser {
    /// Always ends with a `TokenKind::End` token.
    tokens: Vec<Token>,
    next: usize,
}

impl Parser {
    fn parse_all(mut self) -> Result<Node, SyntaxError> {
        let root = self.parse_or()?;
        let token = self.peek();
        if token.kind != TokenKind::End {
            return Err(SyntaxError::new(
                token.position,
                format!(
                    "expected 'and', 'or' or end of expression, found {}",
                    token.kind
                ),
            ));
        }
        Ok(root)
    }

    fn peek(&self) -> &Token {
        let last = self.tokens.len().saturating_sub(1);
        &self.tokens[self.next.min(last)]
    }

    fn advance(&mut self) -> Token {
        let token = self.peek().clone();
        if token.kind != TokenKind::End {
            self.next += 1;
        }
        token
    }

    fn peek_is_keyword(&self, keyword: &str) -> bool {
        matches!(&self.peek().kind, TokenKind::Word(word) if word.eq_ignore_ascii_case(keyword))
    }

    fn parse_or(&mut self) -> Result<Node, SyntaxError> {
        let mut node = self.parse_and()?;
        while self.peek().kind == TokenKind::OrOr || self.peek_is_keyword("or") {
            self.advance();
            let right = self.parse_and()?;
            node = Node::Or(Box::new(node), Box::new(right));
        }
        Ok(node)
    }

    fn parse_and(&mut self) -> Result<Node, SyntaxError> {
        let mut node = self.parse_unary()?;
        while self.peek().kind == TokenKind::AndAnd || self.peek_is_keyword("and") {
            self.advance();
            let right = self.parse_unary()?;
            node = Node::And(Box::new(node), Box::new(right));
        }
        Ok(node)
    }

    fn parse_unary(&mut self) -> Result<Node, SyntaxError> {
        if self.peek().kind == TokenKind::Bang || self.peek_is_keyword("not") {
            self.advance();
            return Ok(Node::Not(Box::new(self.parse_unary()?)));
        }
        if self.peek().kind == TokenKind::LeftParen {
            let open = self.advance();
            let inner = self.parse_or()?;
            let close = self.advance();
            if close.kind != TokenKind::RightParen {
                return Err(SyntaxError::new(
                    close.position,
                    format!(
                        "expected ')' to close the '(' at position {}, found {}",
                        open.position, close.kind
                    ),
                ));
            }
            return Ok(inner);
        }
        self.parse_predicate().map(Node::Predicate)
    }

    fn parse_predicate(&mut self) -> Result<Predicate, SyntaxError> {
        let token = self.advance();
        let subject = match &token.kind {
            TokenKind::Word(word) => Subject::parse(word).ok_or_else(|| {
                SyntaxError::new(
                    token.position,
                    format!("unknown subject '{word}'; expected {SUBJECTS_HINT}"),
                )
            })?,
            other => {
                return Err(SyntaxError::new(
                    token.position,
                    format!("expected a subject ({SUBJECTS_HINT}), found {other}"),
                ))
            }
        };
        let operator_token = self.peek().clone();
        let operator = self.parse_operator()?;
        let unsupported = || {
            SyntaxError::new(
                operator_token.position,
                format!(
                    "operator {} is not supported for subject {}",
                    operator_token.kind, token.kind
                ),
            )
        };
        let (test, negated) = match operator {
            Operator::Exists | Operator::NotExists => {
                (Test::Exists, operator == Operator::NotExists)
            }
            Operator::Equals | Operator::NotEquals => {
                let value = self.parse_value()?;
                let test = self.value_test(&subject, vec![value])?;
                (test, operator == Operator::NotEquals)
            }
            Operator::In | Operator::NotIn => {
                let values = self.parse_list()?;
                let test = self.value_test(&subject, values)?;
                (test, operator == Operator::NotIn)
            }
            Operator::Matches | Operator::NotMatches => {
                if subject.is_numeric() {
                    return Err(unsupported());
                }
                let (position, pattern) = self.parse_value()?;
                let regex = RegexBuilder::new(&format!("^(?:{pattern})$"))
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|error| {
                        SyntaxError::new(position, format!("invalid regular expression: {error}"))
                    })?;
                (Test::Matches(regex), operator == Operator::NotMatches)
            }
            Operator::Compare(comparison) => {
                let (position, value) = self.parse_value()?;
                let threshold = match subject {
                    Subject::AgentVersion => parse_version(&value).map(Threshold::Version),
                    Subject::RegisteredAt => parse_timestamp(&value).map(Threshold::Number),
                    Subject::Attribute(_) | Subject::RunningTasksCount => {
                        parse_number(&value).map(Threshold::Number)
                    }
                    Subject::Ec2InstanceId | Subject::AgentConnected | Subject::TaskGroup => {
                        return Err(unsupported())
                    }
                };
                let threshold = threshold.ok_or_else(|| {
                    SyntaxError::new(
                        position,
                        format!(
                            "expected {} to compare {} with, found {value:?}",
                            expected_value_kind(&subject),
                            token.kind
                        ),
                    )
                })?;
                (Test::Compare(comparison, threshold), false)
            }
        };
        Ok(Predicate {
            subject,
            test,
            negated,
        })
    }

    fn parse_operator(&mut self) -> Result<Operator, SyntaxError> {
        let token = self.advance();
        let operator = match &token.kind {
            TokenKind::EqualEqual => Operator::Equals,
            TokenKind::BangEqual => Operator::NotEquals,
            TokenKind::EqualTilde => Operator::Matches,
            TokenKind::BangTilde => Operator::NotMatches,
            TokenKind::Greater => Operator::Compare(Comparison::Greater),
            TokenKind::GreaterEqual => Operator::Compare(Comparison::GreaterOrEqual),
            TokenKind::Less => Operator::Compare(Comparison::Less),
            TokenKind::LessEqual => Operator::Compare(Comparison::LessOrEqual),
            // `!exists` and `!in` lex as '!' followed by a word.
            TokenKind::Bang if self.peek_is_keyword("exists") => {
                self.advance();
                Operator::NotExists
            }
            TokenKind::Bang if self.peek_is_keyword("in") => {
                self.advance();
                Operator::NotIn
            }
            TokenKind::Word(word) => match word.to_ascii_lowercase().as_str() {
                "equals" => Operator::Equals,
                "not_equals" => Operator::NotEquals,
                "exists" => Operator::Exists,
                "not_exists" => Operator::NotExists,
                "in" => Operator::In,
                "not_in" => Operator::NotIn,
                "matches" => Operator::Matches,
                "not_matches" => Operator::NotMatches,
                _ => return Err(expected_operator(&token)),
            },
            _ => return Err(expected_operator(&token)),
        };
        Ok(operator)
    }

    /// Reads one bare or quoted value; returns its position and text.
    fn parse_value(&mut self) -> Result<(usize, String), SyntaxError> {
        let token = self.advance();
        match token.kind {
            TokenKind::Word(text) | TokenKind::Quoted(text) => Ok((token.position, text)),
            other => Err(SyntaxError::new(
                token.position,
                format!("expected a value, found {other}"),
            )),
        }
    }

    /// Reads `[a, b, ...]` or `(a, b, ...)`.
    fn parse_list(&mut self) -> Result<Vec<(usize, String)>, SyntaxError> {
        let open = self.advance();
        let close = match open.kind {
            TokenKind::LeftBracket => TokenKind::RightBracket,
            TokenKind::LeftParen => TokenKind::RightParen,
            other => {
                return Err(SyntaxError::new(
                    open.position,
                    format!("expected a list such as [a, b] or (a, b), found {other}"),
                ))
            }
        };
        let mut values = vec![self.parse_value()?];
        loop {
            let token = self.advance();
            if token.kind == close {
                return Ok(values);
            }
            if token.kind != TokenKind::Comma {
                return Err(SyntaxError::new(
                    token.position,
                    format!("expected ',' or {close} in the list, found {}", token.kind),
                ));
            }
            values.push(self.parse_value()?);
        }
    }

    /// Builds the test for `==`/`in` values, checking they suit the subject.
    fn value_test(
        &self,
        subject: &Subject,
        values: Vec<(usize, String)>,
    ) -> Result<Test, SyntaxError> {
        let expected_number = |(position, value): &(usize, String)| {
            SyntaxError::new(
                *position,
                format!("expected {}, found {value:?}", expected_value_kind(subject)),
            )
        };
        match subject {
            Subject::RunningTasksCount => values
                .iter()
                .map(|value| parse_number(&value.1).ok_or_else(|| expected_number(value)))
                .collect::<Result<_, _>>()
                .map(Test::NumberOneOf),
            Subject::RegisteredAt => values
                .iter()
                .map(|value| parse_timestamp(&value.1).ok_or_else(|| expected_number(value)))
                .collect::<Result<_, _>>()
                .map(Test::NumberOneOf),
            Subject::AgentConnected => values
                .into_iter()
                .map(|(position, value)| {
                    let normalized = value.to_ascii_lowercase();
                    if normalized == "true" || normalized == "false" {
                        Ok(Pattern::new(normalized))
                    } else {
                        Err(SyntaxError::new(
                            position,
                            format!("expected true or false for agentConnected, found {value:?}"),
                        ))
                    }
                })
                .collect::<Result<_, _>>()
                .map(Test::OneOf),
            Subject::Attribute(_)
            | Subject::Ec2InstanceId
            | Subject::AgentVersion
            | Subject::TaskGroup => Ok(Test::OneOf(
                values
                    .into_iter()
                    .map(|(_, value)| Pattern::new(value))
                    .collect(),
            )),
        }
    }
}

fn expected_operator(token: &Token) -> SyntaxError {
    SyntaxError::new(
        token.position,
        format!(
            "expected an operator ({OPERATORS_HINT}), found {}",
            token.kind
        ),
    )
}

fn expected_value_kind(subject: &Subject) -> &'static str {
    match subject {
        Subject::AgentVersion => "a version such as 1.20.0",
        Subject::RegisteredAt => "epoch seconds or a date such as 2024-01-31",
        _ => "a number",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance() -> InstanceSnapshot {
        InstanceSnapshot {
            arn: "arn:aws:ecs:us-east-1:000000000000:container-instance/default/a".into(),
            instance_id: "i-0123456789abcdef0".into(),
            attributes: [
                ("ecs.instance-type", "t2.micro"),
                ("ecs.availability-zone", "us-east-1a"),
                ("ecs.os-type", "linux"),
                ("gpu-count", "4"),
                ("stack", "prod"),
            ]
            .into_iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect(),
            agent_connected: true,
            agent_version: "1.80.0".into(),
            // 2024-03-01T00:00:00Z
            registered_at: 1_709_251_200.0,
            task_groups: [
                ("service:api".to_string(), 1),
                ("family:batch".to_string(), 1),
            ]
            .into_iter()
            .collect(),
            ..InstanceSnapshot::default()
        }
    }

    fn eval(source: &str) -> bool {
        let expression = Expression::parse(source)
            .unwrap_or_else(|error| panic!("{source:?} should parse: {error}"));
        expression.matches(&instance())
    }

    fn parse_error(source: &str) -> String {
        match Expression::parse(source) {
            Ok(_) => panic!("{source:?} should not parse"),
            Err(PlacementError::InvalidConstraint(message)) => message,
            Err(other) => panic!("unexpected error kind: {other:?}"),
        }
    }

    #[test]
    fn equality_operators() {
        assert!(eval("attribute:ecs.instance-type == t2.micro"));
        assert!(eval("attribute:ecs.instance-type equals t2.micro"));
        assert!(!eval("attribute:ecs.instance-type == t2.small"));
        assert!(eval("attribute:ecs.instance-type != t2.small"));
        assert!(eval("attribute:ecs.instance-type not_equals t2.small"));
        assert!(!eval("attribute:ecs.instance-type != t2.micro"));
        // `!=` on a missing attribute holds: the instance is not "== value".
        assert!(eval("attribute:missing != x"));
        assert!(!eval("attribute:missing == x"));
        assert!(eval("attribute:stack == \"prod\""));
        assert!(eval("attribute:stack == 'prod'"));
    }

    #[test]
    fn in_and_not_in() {
        assert!(eval(
            "attribute:ecs.availability-zone in [us-east-1a, us-east-1b]"
        ));
        assert!(eval(
            "attribute:ecs.availability-zone in (us-east-1b, us-east-1a)"
        ));
        assert!(!eval(
            "attribute:ecs.availability-zone in [us-east-1b, us-east-1c]"
        ));
        assert!(eval("attribute:ecs.availability-zone not_in [us-east-1b]"));
        assert!(eval("attribute:ecs.availability-zone !in [us-east-1b]"));
        assert!(!eval("attribute:ecs.availability-zone !in [us-east-1a]"));
        assert!(eval("attribute:ecs.instance-type in [m5.*, t2.*]"));
    }

    #[test]
    fn exists_operators() {
        assert!(eval("attribute:stack exists"));
        assert!(!eval("attribute:missing exists"));
        assert!(eval("attribute:missing !exists"));
        assert!(eval("attribute:missing not_exists"));
        assert!(!eval("attribute:stack not_exists"));
    }

    #[test]
    fn wildcards() {
        assert!(eval("attribute:ecs.instance-type == t2.*"));
        assert!(eval("attribute:ecs.instance-type == *.micro"));
        assert!(eval("attribute:ecs.instance-type == t*mi*o"));
        assert!(eval("attribute:ecs.instance-type == *"));
        assert!(!eval("attribute:ecs.instance-type == m5.*"));
        assert!(eval("attribute:ecs.instance-type != m5.*"));
        assert!(!eval("attribute:ecs.instance-type == t2.micro*x"));
        assert!(glob_match("a*a", "aa"));
        assert!(!glob_match("ab*ba", "aba"));
    }

    #[test]
    fn regular_expressions() {
        assert!(eval("attribute:ecs.instance-type =~ t2.*"));
        assert!(eval(
            "attribute:ecs.instance-type matches 't[0-9]\\.(micro|small)'"
        ));
        // Matched against the whole value, not a substring.
        assert!(!eval("attribute:ecs.instance-type =~ micro"));
        assert!(eval("attribute:ecs.instance-type !~ m5.*"));
        assert!(eval("attribute:ecs.instance-type not_matches m5.*"));
        assert!(!eval("attribute:missing =~ .*"));
        assert!(eval("ec2InstanceId =~ 'i-0123.*'"));
        // Escaped quotes and backslashes inside quoted values.
        assert!(!eval(r#"attribute:stack == "pr\"od""#));
        assert!(eval(r#"attribute:stack =~ "p\w+""#));
    }

    #[test]
    fn boolean_combinators_and_precedence() {
        assert!(eval(
            "attribute:stack == prod and attribute:ecs.os-type == linux"
        ));
        assert!(eval(
            "attribute:stack == prod && attribute:ecs.os-type == linux"
        ));
        assert!(!eval(
            "attribute:stack == dev and attribute:ecs.os-type == linux"
        ));
        assert!(eval(
            "attribute:stack == dev or attribute:ecs.os-type == linux"
        ));
        assert!(eval(
            "attribute:stack == dev || attribute:ecs.os-type == linux"
        ));
        assert!(eval("not attribute:stack == dev"));
        assert!(eval("!attribute:stack == dev"));
        assert!(eval("!(attribute:stack == dev)"));
        // `and` binds tighter: true or (false and false).
        assert!(eval(
            "attribute:stack == prod or attribute:stack == dev and attribute:x exists"
        ));
        // Parentheses override: (true or false) and false.
        assert!(!eval(
            "(attribute:stack == prod or attribute:stack == dev) and attribute:x exists"
        ));
        assert!(eval("((attribute:stack == prod))"));
        assert!(eval(
            "NOT attribute:stack == dev AND attribute:stack == prod"
        ));
    }

    #[test]
    fn instance_subjects() {
        assert!(eval("ec2InstanceId == i-0123456789abcdef0"));
        assert!(eval("agentConnected == true"));
        assert!(!eval("agentConnected == false"));
        assert!(eval("agentVersion == 1.80.0"));
        assert!(eval("agentVersion >= 1.8.0"));
        assert!(eval("agentVersion > 1.79"));
        assert!(!eval("agentVersion < 1.80"));
        assert!(eval("runningTasksCount == 2"));
        assert!(eval("runningTasksCount in [1, 2]"));
        assert!(eval("runningTasksCount < 3"));
        assert!(!eval("runningTasksCount > 2"));
        assert!(eval("runningTasksCount <= 2 and runningTasksCount >= 2"));
        assert!(eval("registeredAt >= 2024-03-01"));
        assert!(eval("registeredAt < 2024-03-01T00:00:01Z"));
        assert!(eval("registeredAt == 1709251200"));
        assert!(eval("attribute:gpu-count > 2"));
        assert!(!eval("attribute:stack > 2"));
    }

    #[test]
    fn task_group_subject() {
        assert!(eval("task:group == service:api"));
        assert!(eval("task:group == family:*"));
        assert!(eval("task:group in [service:web, family:batch]"));
        assert!(!eval("task:group == service:web"));
        assert!(eval("task:group != service:web"));
        // `!=` means "runs no task of that group", not "runs some other task".
        assert!(!eval("task:group != service:api"));
        assert!(eval("task:group exists"));
        let empty = InstanceSnapshot::default();
        let expression = Expression::parse("task:group exists").expect("parses");
        assert!(!expression.matches(&empty));
    }

    #[test]
    fn planned_tasks_are_visible() {
        let mut snapshot = instance();
        snapshot.task_groups.clear();
        let expression = Expression::parse("task:group == service:web and runningTasksCount == 1")
            .expect("parses");
        let facts = InstanceFacts {
            snapshot: &snapshot,
            planned_tasks: 1,
            planned_group: "service:web",
        };
        assert!(expression.matches_facts(&facts));
        assert!(!expression.matches(&snapshot));
    }

    #[test]
    fn parse_errors_name_position_and_expectation() {
        let message = parse_error("attribute:stack");
        assert!(message.contains("expected an operator"), "{message}");
        assert!(message.contains("position 15"), "{message}");

        let message = parse_error("attribute:stack == ");
        assert!(message.contains("expected a value"), "{message}");

        let message = parse_error("attribute:stack = prod");
        assert!(message.contains("'=='"), "{message}");
        assert!(message.contains("position 16"), "{message}");

        let message = parse_error("(attribute:stack == prod");
        assert!(message.contains("expected ')'"), "{message}");

        let message = parse_error("attribute:stack == prod attribute:x exists");
        assert!(message.contains("expected 'and', 'or'"), "{message}");
        assert!(message.contains("position 24"), "{message}");

        let message = parse_error("color == red");
        assert!(message.contains("unknown subject 'color'"), "{message}");

        let message = parse_error("attribute:stack in [a, b");
        assert!(message.contains("expected ',' or ']'"), "{message}");

        let message = parse_error("attribute:stack in a");
        assert!(message.contains("expected a list"), "{message}");

        let message = parse_error("attribute:stack == 'prod");
        assert!(message.contains("unterminated string"), "{message}");

        let message = parse_error("attribute:stack =~ '('");
        assert!(message.contains("invalid regular expression"), "{message}");

        let message = parse_error("runningTasksCount > many");
        assert!(message.contains("expected a number"), "{message}");

        let message = parse_error("ec2InstanceId > 3");
        assert!(message.contains("not supported"), "{message}");

        let message = parse_error("agentConnected == maybe");
        assert!(message.contains("true or false"), "{message}");

        let message = parse_error("attribute:stack == prod and");
        assert!(message.contains("expected a subject"), "{message}");

        let message = parse_error("attribute:stack == a#b");
        assert!(message.contains("unexpected character '#'"), "{message}");

        assert!(parse_error("").contains("expected a subject"));
        assert!(parse_error("attribute: exists").contains("unknown subject"));
    }

    #[test]
    fn timestamps_and_versions() {
        assert_eq!(parse_timestamp("1970-01-01"), Some(0.0));
        assert_eq!(parse_timestamp("2000-03-01T01:02:03Z"), Some(951_872_523.0));
        assert_eq!(parse_timestamp("2024-13-01"), None);
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(parse_version("v1.20.0-beta"), Some(vec![1, 20, 0]));
        assert_eq!(parse_version("latest"), None);
        assert_eq!(compare_versions(&[1, 2], &[1, 2, 0]), Ordering::Equal);
        assert_eq!(compare_versions(&[1, 10], &[1, 9, 9]), Ordering::Greater);
    }
}

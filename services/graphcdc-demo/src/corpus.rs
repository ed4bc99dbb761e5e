//! Text for the demo's chunks when they are embedded on the way: sentences on a few
//! topics, so a search shows the store answering by meaning, and a check can tell that
//! it does (the nearest chunk of a query is on the query's topic).

/// (topic, sentences).
pub const TOPICS: [(&str, [&str; 4]); 6] = [
    (
        "graphs",
        [
            "Neo4j stores nodes and relationships as a property graph.",
            "A Cypher query walks from a node along its relationships.",
            "Knowledge graphs link entities mentioned across many documents.",
            "Graph traversal finds every node reachable within two hops.",
        ],
    ),
    (
        "streaming",
        [
            "Kafka keeps an ordered log of change events per partition.",
            "A consumer group commits offsets after processing each batch.",
            "Change data capture streams every database update to subscribers.",
            "A compacted topic keeps the latest record for every key.",
        ],
    ),
    (
        "cooking",
        [
            "Simmer the tomato sauce with garlic and fresh basil for twenty minutes.",
            "Knead the bread dough until it is smooth and elastic.",
            "Roast the vegetables in a hot oven with olive oil and salt.",
            "Whisk eggs and sugar before folding in the flour for the cake.",
        ],
    ),
    (
        "football",
        [
            "The striker scored twice in the second half of the match.",
            "The goalkeeper saved a penalty in the final minute.",
            "The coach changed the formation after the first goal.",
            "Fans filled the stadium for the championship final.",
        ],
    ),
    (
        "astronomy",
        [
            "The telescope observed a distant galaxy full of young stars.",
            "Jupiter's moons orbit the giant planet in a few days.",
            "A supernova briefly outshines its entire galaxy.",
            "The comet's tail points away from the sun.",
        ],
    ),
    (
        "gardening",
        [
            "Water the lawn early in the morning during summer.",
            "Prune the roses in late winter before new growth starts.",
            "Compost enriches garden soil with organic matter.",
            "Plant the tulip bulbs in autumn for flowers in spring.",
        ],
    ),
];

/// The text of chunk `c` of file `file`, and its topic.
pub fn chunk_text(c: usize, file: usize) -> (&'static str, String) {
    let (topic, sentences) = TOPICS[c % TOPICS.len()];
    let sentence = sentences[(c / TOPICS.len()) % sentences.len()];
    (topic, format!("{sentence} (report {file}, part {c})"))
}

/// Queries the demo runs after the stream, with the topic their nearest chunk must have.
pub const QUERIES: [(&str, &str); 4] = [
    ("how do database changes reach other systems", "streaming"),
    ("cooking a recipe in the kitchen", "cooking"),
    ("planets and stars in the night sky", "astronomy"),
    ("who won the soccer game", "football"),
];

/// The topic of a chunk text made by [`chunk_text`].
pub fn topic_of(text: &str) -> Option<&'static str> {
    TOPICS
        .iter()
        .find(|(_, sentences)| sentences.iter().any(|s| text.starts_with(s)))
        .map(|(topic, _)| *topic)
}

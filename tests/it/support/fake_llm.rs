//! fake_llm

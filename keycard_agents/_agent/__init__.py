"""The agent model: dependencies, skills, the skill context, the grant decorator, the card."""

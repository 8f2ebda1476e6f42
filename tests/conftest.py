import sys
from pathlib import Path

# test helper modules (kernel_cases.py, ...) import by bare name
sys.path.insert(0, str(Path(__file__).parent))
